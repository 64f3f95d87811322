"""Realistic mixed traffic for locust: applications calling the OpenAI-compatible API with their own keys.

Each simulated user is one application with one API key and one model (taken round-robin from
LOAD_API_KEYS and LOAD_MODELS). Between calls it thinks for 0.5-3 s, then makes one of:

- a chat completion (most often), with a prompt from a fixed set and max_tokens between 8 and 48;
- a streamed chat completion with usage, read to `[DONE]`;
- a legacy text completion;
- a stream it abandons after a few chunks (the platform records it as cancelled, 499);
- a request whose max_tokens exceeds the model's context (a 400 the platform records as an error).

A key with a per-key limit answers 429 once over it; those count as expected, not failures.
Anything else that is not 2xx (or the expected 400) is a locust failure.

    LOAD_API_KEYS=ipk-...,ipk-... .venv/bin/locust -f benchmarks/locustfile.py \
        --host http://127.0.0.1:8000 --headless --users 6 --spawn-rate 2 --run-time 5m

LOAD_MODELS defaults to "smollm2". benchmarks/dashboard_load.py runs this against a distributed
deployment and photographs the admin dashboard afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import HttpUser, between, task

PROMPTS = (
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "Give me three names for a bakery.",
    "What is the capital of France?",
    "Summarise the plot of Romeo and Juliet.",
    "List four fruits that are red.",
    "How do I boil an egg?",
    "Translate 'good morning' into Spanish.",
)
ABANDON_AFTER_CHUNKS = 3
OVERSIZED_MAX_TOKENS = 1_000_000  # past any context: the platform answers 400 and records it

_users = itertools.count()


def _setting(name: str, default: str | None = None) -> list[str]:
    value = os.environ.get(name, default)
    if not value:
        raise RuntimeError(f"{name} is not set (comma-separated)")
    return [item.strip() for item in value.split(",") if item.strip()]


class Application(HttpUser):
    wait_time = between(0.5, 3)

    def on_start(self) -> None:
        n = next(_users)
        keys, models = _setting("LOAD_API_KEYS"), _setting("LOAD_MODELS", "smollm2")
        self.model = models[n % len(models)]
        self.client.headers["Authorization"] = f"Bearer {keys[n % len(keys)]}"
        self.random = random.Random(n)

    def _chat_body(self, **extra) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": self.random.choice(PROMPTS)}],
            "max_tokens": self.random.randint(8, 48),
            "temperature": 0.7,
            **extra,
        }

    def _post(self, path: str, body: dict, name: str, *, expected: tuple[int, ...] = (200,), stream: bool = False):
        """POST with 429 (a per-key limit) and the statuses in `expected` counted as successes."""
        with self.client.post(path, json=body, name=name, stream=stream, catch_response=True) as response:
            if response.status_code in expected or response.status_code == 429:
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            return response

    @task(6)
    def chat(self) -> None:
        self._post("/v1/chat/completions", self._chat_body(), "chat")

    @task(4)
    def chat_stream(self) -> None:
        body = self._chat_body(stream=True, stream_options={"include_usage": True})
        with self.client.post(
            "/v1/chat/completions", json=body, name="chat stream", stream=True, catch_response=True
        ) as response:
            if response.status_code == 429:
                response.success()
                return
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            events = [line for line in response.iter_lines() if line.startswith(b"data: ")]
            if not events or events[-1] != b"data: [DONE]":
                response.failure("the stream did not end with [DONE]")
            elif "usage" not in json.loads(events[-2][len(b"data: ") :]):
                response.failure("no usage chunk before [DONE]")

    @task(2)
    def completion(self) -> None:
        body = {"model": self.model, "prompt": self.random.choice(PROMPTS), "max_tokens": self.random.randint(8, 32)}
        self._post("/v1/completions", body, "completion")

    @task(1)
    def abandoned_stream(self) -> None:
        body = self._chat_body(stream=True, max_tokens=200)
        with self.client.post(
            "/v1/chat/completions", json=body, name="abandoned stream", stream=True, catch_response=True
        ) as response:
            if response.status_code not in (200, 429):
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            response.success()
            # Read a few chunks, then hang up: closing a half-read response drops the connection.
            for _ in zip(range(ABANDON_AFTER_CHUNKS), response.iter_lines()):
                pass
            response.close()

    @task(1)
    def oversized(self) -> None:
        self._post(
            "/v1/chat/completions", self._chat_body(max_tokens=OVERSIZED_MAX_TOKENS), "oversized (400)", expected=(400,)
        )
