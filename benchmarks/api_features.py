"""Structured outputs and embeddings: through the platform vs llama-cpp-python directly.

Starts the platform as the README does (`./run.sh`, fresh SQLite, free port) and loads the same
bundled GGUF in this process with llama-cpp-python, then drives the two alternately, never at
once, with the same requests:

- **json_schema**: a chat request whose answer must match a JSON schema, greedy. The platform
  applies the grammar in its per-sequence sampler chain; llama-cpp-python's
  `create_chat_completion(response_format=...)` applies its own grammar. Also the same request
  without a schema on the platform, for the grammar's own cost. Reported: completion tokens/s
  (tokens over the whole request) and whether every answer validated.
- **embeddings**: one request embedding a batch of short texts; llama-cpp-python's
  `Llama(embedding=True, pooling_type=MEAN).embed(...)`. Reported: inputs/s.

It prints medians and ratios platform/direct and never passes or fails on timings.

    .venv/bin/python benchmarks/api_features.py [--runs 5] [--batch 32] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.platforms import MODEL, embedded_platform  # noqa: E402  (needs ROOT on sys.path)
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django)

EMBED_MODEL = "smollm2-embed"  # the bundled model's embedding registration in embedded mode
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Describe a person as JSON with a name, an age and hobbies."}]
MAX_TOKENS = 96
TEXTS = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(["the sea", "a cat", "rain", "bread"] * 16)]


def _valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


class PlatformSide:
    """The platform over HTTP, as any OpenAI client calls it."""

    def __init__(self, base_url: str, api_key: str):
        self.client = httpx.Client(
            base_url=f"{base_url}/v1", headers={"Authorization": f"Bearer {api_key}"}, timeout=300
        )

    def chat(self, *, schema: bool) -> tuple[float, int, bool]:
        body: dict = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0, "seed": 1}
        if schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
            }
        started = time.perf_counter()
        response = self.client.post("/chat/completions", json=body)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        answer = response.json()
        text = answer["choices"][0]["message"]["content"]
        return elapsed, answer["usage"]["completion_tokens"], _valid(text)

    def embed(self, texts: list[str]) -> float:
        started = time.perf_counter()
        response = self.client.post("/embeddings", json={"model": EMBED_MODEL, "input": texts})
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        assert len(response.json()["data"]) == len(texts)
        return elapsed


class DirectSide:
    """llama-cpp-python in this process, as a user of the library would call it."""

    def __init__(self, model_path: Path):
        import llama_cpp

        from engines.llama_cpp import physical_cores

        threads = physical_cores()
        common = {"model_path": str(model_path), "n_threads": threads, "n_threads_batch": threads, "verbose": False}
        self.llama = llama_cpp.Llama(n_ctx=2048, **common)
        self.embedder = llama_cpp.Llama(
            n_ctx=2048, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, **common
        )

    def chat(self) -> tuple[float, int, bool]:
        started = time.perf_counter()
        answer = self.llama.create_chat_completion(
            MESSAGES,
            max_tokens=MAX_TOKENS,
            temperature=0,
            seed=1,
            response_format={"type": "json_object", "schema": SCHEMA},
        )
        elapsed = time.perf_counter() - started
        return elapsed, answer["usage"]["completion_tokens"], _valid(answer["choices"][0]["message"]["content"] or "")

    def embed(self, texts: list[str]) -> float:
        started = time.perf_counter()
        vectors = self.embedder.embed(texts)
        elapsed = time.perf_counter() - started
        assert len(vectors) == len(texts)
        return elapsed


def _tokens_per_s(samples: list[tuple[float, int, bool]]) -> float:
    return statistics.median(tokens / elapsed for elapsed, tokens, _ in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="texts per embeddings request")
    parser.add_argument("--smoke", action="store_true", help="one run of each, a batch of 4: checks the harness")
    parser.add_argument("--out", type=Path, help="directory for results.json and summary.md")
    args = parser.parse_args()
    runs, batch = (1, 4) if args.smoke else (args.runs, args.batch)
    texts = TEXTS[:batch]
    direct = DirectSide(bundled_model_path())
    samples: dict[str, list] = {"platform_schema": [], "platform_plain": [], "direct_schema": []}
    embeds: dict[str, list[float]] = {"platform": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp, embedded_platform(Path(tmp), "llama_cpp") as server:
        platform = PlatformSide(server.base_url, server.api_key)
        platform.chat(schema=True)  # warm-up: the first request pays for loading pages of the weights
        direct.chat()
        for _ in range(runs):
            samples["platform_schema"].append(platform.chat(schema=True))
            samples["platform_plain"].append(platform.chat(schema=False))
            samples["direct_schema"].append(direct.chat())
            embeds["platform"].append(batch / platform.embed(texts))
            embeds["direct"].append(batch / direct.embed(texts))
    results = {
        "json_schema_tokens_per_s": {
            "platform": _tokens_per_s(samples["platform_schema"]),
            "direct": _tokens_per_s(samples["direct_schema"]),
            "platform_without_schema": _tokens_per_s(samples["platform_plain"]),
        },
        "json_schema_all_valid": {
            side: all(valid for _, _, valid in samples[key])
            for side, key in (("platform", "platform_schema"), ("direct", "direct_schema"))
        },
        "embeddings_inputs_per_s": {side: statistics.median(values) for side, values in embeds.items()},
    }
    tokens = results["json_schema_tokens_per_s"]
    compared = {
        "json_schema_platform_over_direct": tokens["platform"] / tokens["direct"],
        "grammar_cost_on_platform": tokens["platform"] / tokens["platform_without_schema"],
        "embeddings_platform_over_direct": results["embeddings_inputs_per_s"]["platform"]
        / results["embeddings_inputs_per_s"]["direct"],
    }
    summary = [
        f"json_schema chat, tokens/s: platform {tokens['platform']:.1f}, llama-cpp-python {tokens['direct']:.1f} "
        f"= {compared['json_schema_platform_over_direct']:.2f}x; platform without the schema "
        f"{tokens['platform_without_schema']:.1f} (schema costs {1 - compared['grammar_cost_on_platform']:.0%})",
        f"every answer valid: {results['json_schema_all_valid']}",
        f"embeddings of {batch} texts, inputs/s: platform {results['embeddings_inputs_per_s']['platform']:.1f}, "
        f"llama-cpp-python {results['embeddings_inputs_per_s']['direct']:.1f} "
        f"= {compared['embeddings_platform_over_direct']:.2f}x",
    ]
    print("\n".join(summary))
    record = {
        "benchmark": "api_features",
        "cpu": cpu_model(),
        "runs": runs,
        "batch": batch,
        "results": results,
        "compared": compared,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(record, indent=2))
        (args.out / "summary.md").write_text("\n".join(f"- {line}" for line in summary) + "\n")
    print(json.dumps(record))
    if not results["json_schema_all_valid"]["platform"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
