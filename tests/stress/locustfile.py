"""The stress scenario: inference users and rapid-fire readers against any OpenAI-compatible server.

- InferenceUser (weight 3) thinks 1-3 s between calls: chat completions (random max_tokens 20-100,
  temperature 0.1-0.9), GET /health, GET /v1/models and GET /v1/system/status.
- ConcurrentUser (weight 1) fires cheap GETs (/health, /v1/models) 0.1-0.5 s apart.

Settings come from the environment:

    STRESS_API_KEY   the bearer key (the platform prints one on first run; llama-server ignores it)
    STRESS_MODEL     the model to ask for (default "smollm2")
    STRESS_TARGET    "platform" (default) or "llama-server": llama-server has /health, /v1/models
                     and /v1/chat/completions but no /v1/system/status, so that task is skipped there

Run headless by tests/stress/run_stress_test.sh; by hand:

    STRESS_API_KEY=ipk-... .venv/bin/locust -f tests/stress/locustfile.py --host http://127.0.0.1:8000 \
        --headless --users 10 --spawn-rate 10 --run-time 60s
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

PROMPTS = (
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "Give me three names for a bakery.",
    "What is the capital of France?",
    "Summarise the plot of Romeo and Juliet.",
    "How do I boil an egg?",
    "Describe a sunrise over the mountains.",
    "What are the benefits of regular exercise?",
)
TARGETS = ("platform", "llama-server")


def _target() -> str:
    target = os.environ.get("STRESS_TARGET", "platform")
    if target not in TARGETS:
        raise RuntimeError(f"STRESS_TARGET must be one of {TARGETS}, not {target!r}")
    return target


class _Authenticated(HttpUser):
    abstract = True

    def on_start(self) -> None:
        key = os.environ.get("STRESS_API_KEY", "")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    def _get_json(self, path: str, name: str, expect_key: str | None = None) -> None:
        """A GET that must answer 200 with a JSON body (holding `expect_key`, when given)."""
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure("not JSON")
                return
            if expect_key and expect_key not in body:
                response.failure(f"no {expect_key!r} in the body")


class InferenceUser(_Authenticated):
    weight = 3
    wait_time = between(1, 3)

    @task(5)
    def chat_completion(self) -> None:
        body = {
            "model": os.environ.get("STRESS_MODEL", "smollm2"),
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "max_tokens": random.randint(20, 100),
            "temperature": round(random.uniform(0.1, 0.9), 2),
        }
        with self.client.post(
            "/v1/chat/completions", json=body, name="chat completion", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            try:
                answer = response.json()
                answer["choices"][0]["message"]["content"]
                answer["usage"]["completion_tokens"]
            except (ValueError, KeyError, IndexError, TypeError):
                response.failure(f"not a chat completion: {response.text[:200]}")

    @task(2)
    def models(self) -> None:
        self._get_json("/v1/models", "models", expect_key="data")

    @task(1)
    def health(self) -> None:
        self._get_json("/health", "health")

    @task(1)
    def system_status(self) -> None:
        if _target() == "llama-server":
            return  # llama-server has no such endpoint; its 404s would read as failures
        self._get_json("/v1/system/status", "system status")


class ConcurrentUser(_Authenticated):
    weight = 1
    wait_time = between(0.1, 0.5)

    @task(3)
    def health(self) -> None:
        self._get_json("/health", "rapid health")

    @task(1)
    def models(self) -> None:
        self._get_json("/v1/models", "rapid models", expect_key="data")
