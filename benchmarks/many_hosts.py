"""Many hosts: a distributed platform whose workers each run on their own "host" (network namespace).

One run of the harness (benchmarks/hosts: a bridge, Redis and a PostgreSQL forwarder on it, the web
process in the root namespace, one Celery worker per namespace with its own host name), then:

1. throughput: models `echo` (echo engine, 20 ms a token) and `smollm2` (the bundled GGUF) deployed
   with replicas=3; hosts are added one at a time and, on 1, 2 and 3 hosts, a closed loop of streamed
   chat completions (the same client count and requests at every step) measures aggregate tok/s,
   printed as the ratio to 1 host. Every host shares this machine's CPUs, so SmolLM2, which is
   CPU-bound, cannot scale here; the echo engine (which waits, not computes) shows what the
   platform's spreading does.
2. placement, read from Replica rows and WorkerRegistration: `echo` (replicas=3) one copy per host;
   `gpu-echo` (placement label gpu, replicas=3) only on the labelled host h3.
3. killing a host: long streams of `ha-echo` (replicas=2) run, one host holding it is killed (SIGKILL
   to its processes, namespace deleted); its clients' time from the kill to an error, and the time
   until ha-echo has 2 ready copies again on the remaining hosts.
4. adding a host is one command: `python -m benchmarks.hosts add-host h4`, timed until its worker
   is ready, and until `echo` (replicas=3) is back to 3 ready copies.

Workers run in reconcile mode (no --models): the deployments place models. `--pinned` starts them
with `--models` instead (no placement, no rescheduling: sections 2 and the rescheduling of 3 are
skipped), for a platform whose workers do not reconcile yet.

    sudo .venv/bin/python benchmarks/many_hosts.py [--engines echo,smollm2] [--requests 36] [--clients 12]
        [--max-tokens 64] [--pinned] [--out DIR]

Root only. Exits non-zero when a throughput request failed or the harness could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hosts.harness import Harness  # noqa: E402
from benchmarks.hosts.network import HarnessUnavailable, require_root_and_tools  # noqa: E402
from benchmarks.streaming import (  # noqa: E402
    PROMPTS,
    echo_prompts,
    fmt,
    one_request,
    open_client,
    ratio,
    run_level,
    warm_up,
)
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)

HOSTS = ("h1", "h2", "h3")
LABELLED = {"h3": ["gpu"]}
HOST_CONCURRENCY = 4  # jobs one host takes at once: what bounds an echo host's throughput
READY_TIMEOUT_S = 180
KILL_STREAM_TOKENS = 400  # long enough (400 x 20 ms) to be running when the host dies
KILL_CLIENTS = 6
# A stream that neither ends nor errs this long after its host died is reported as a timeout (the
# platform should answer within about WORKER_DEAD_AFTER_SECONDS).
KILL_CLIENT_TIMEOUT_S = 60


def wait_for(predicate, timeout: float, what: str) -> float:
    """Poll until `predicate()`; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def live_ready_hosts(harness: Harness, model: str) -> list[str]:
    return harness.ready_hosts(model)


# --------------------------------------------------------------------------- sections


def register_models(harness: Harness, args) -> None:
    echo = ("--engine", "echo", "--context-length", "4096", "--option", "token_delay_ms=20")
    harness.manage("register_model", "echo", *echo, "--replicas", "3")
    harness.manage("register_model", "gpu-echo", *echo, "--replicas", "3", "--placement-label", "gpu")
    harness.manage("register_model", "ha-echo", *echo, "--replicas", "2")
    if "smollm2" in args.engines:
        harness.manage(
            "register_model", "smollm2", "--source", str(bundled_model_path()), "--engine", "llama_cpp",
            "--replicas", "3",
        )  # fmt: skip


def add_host(harness: Harness, name: str, args) -> None:
    models = ",".join(["echo", *(["smollm2"] if "smollm2" in args.engines else [])]) if args.pinned else None
    harness.add_host(name, labels=LABELLED.get(name), models=models, concurrency=HOST_CONCURRENCY)


async def measure(harness: Harness, model: str, args) -> dict:
    prompts = echo_prompts(args.max_tokens) if model == "echo" else PROMPTS
    client = open_client(harness.base_url, harness.api_key, args.clients)
    try:
        await warm_up(client, model, prompts, args.max_tokens)
        requests = args.requests if model == "echo" else args.smollm2_requests
        result = await run_level(client, model, args.clients, requests, prompts, args.max_tokens)
    finally:
        await client.close()
    return result.summary()


def throughput(harness: Harness, args) -> dict[str, list[dict]]:
    """Add the hosts one at a time; on each count, every engine's aggregate tok/s."""
    results: dict[str, list[dict]] = {engine: [] for engine in args.engines}
    for count, name in enumerate(HOSTS, start=1):
        add_host(harness, name, args)
        for engine in args.engines:
            if not args.pinned:
                wait_for(lambda e=engine, c=count: len(live_ready_hosts(harness, e)) == c, READY_TIMEOUT_S,
                         f"{engine} ready on {count} hosts")  # fmt: skip
            summary = asyncio.run(measure(harness, engine, args))
            summary["hosts"] = count
            results[engine].append(summary)
            other = (summary["cpu"] or {}).get("other_share")
            print(
                f"  {engine:8} on {count} host(s): {summary['ok']}/{summary['requests']} ok, "
                f"{summary['tokens_per_s']} tok/s, TTFT p50 {summary['ttft_p50_ms']} ms"
                + (f", other processes {other:.0%} of the machine" if other is not None else ""),
                flush=True,
            )
    return results


def placement(harness: Harness) -> dict:
    """Where each model's copies are, from the Replica rows, and each worker's host and labels."""
    for model, hosts in (("echo", 3), ("gpu-echo", 1), ("ha-echo", 2)):
        wait_for(lambda m=model, n=hosts: len(live_ready_hosts(harness, m)) == n, READY_TIMEOUT_S, f"{model} placed")
    copies = {model: live_ready_hosts(harness, model) for model in ("echo", "gpu-echo", "ha-echo")}
    workers = {w["host"]: w["labels"] for w in harness.workers() if w["state"] != "dead"}
    return {"copies": copies, "worker_labels": workers}


async def _stream_until_done(harness: Harness, model: str) -> tuple[bool, float, str]:
    """One long stream: (ok, the monotonic time it ended, its error)."""
    client = open_client(harness.base_url, harness.api_key, 1).with_options(timeout=KILL_CLIENT_TIMEOUT_S)
    try:
        sample = await one_request(client, model, " ".join(["word"] * KILL_STREAM_TOKENS), KILL_STREAM_TOKENS)
    finally:
        await client.close()
    return sample.ok, time.monotonic(), sample.error or ""


async def kill_during_streams(
    harness: Harness, model: str, victim: str, survivors: set[str] | None, clients: int = KILL_CLIENTS
) -> dict:
    """Start `clients` streams, kill `victim`, and watch (when `survivors` is given) for the model's copies
    to be ready on exactly those hosts: the kill's time, the streams' outcomes, and when the copies were back."""
    streams = [asyncio.create_task(_stream_until_done(harness, model)) for _ in range(clients)]
    await asyncio.sleep(2)  # every stream has started on one of the model's hosts
    killed_at = time.monotonic()
    await asyncio.to_thread(harness.kill_host, victim)
    back_at = None
    if survivors is not None:
        await asyncio.to_thread(
            wait_for, lambda: set(live_ready_hosts(harness, model)) == survivors, READY_TIMEOUT_S, "rescheduling"
        )
        back_at = time.monotonic()
    return {"killed_at": killed_at, "outcomes": await asyncio.gather(*streams), "back_at": back_at}


def kill_one(harness: Harness, args) -> dict:
    """Kill a host that holds the model while streams run; the clients' errors and the rescheduling."""
    model = "echo" if args.pinned else "ha-echo"
    victim = HOSTS[0] if args.pinned else live_ready_hosts(harness, model)[0]
    survivors = None if args.pinned else set(HOSTS) - {victim}
    run = asyncio.run(kill_during_streams(harness, model, victim, survivors))
    killed_at = run["killed_at"]
    errors = [(round(ended - killed_at, 2), error) for ok, ended, error in run["outcomes"] if not ok]
    report: dict = {
        "model": model,
        "killed": victim,
        "streams": len(run["outcomes"]),
        "failed": len(errors),
        "seconds_to_error": sorted(seconds for seconds, _ in errors),
        "errors": sorted({error for _, error in errors})[:3],
    }
    if run["back_at"] is not None:
        report["rescheduled_s"] = round(run["back_at"] - killed_at, 2)
        report["copies_after"] = live_ready_hosts(harness, model)
    return report


def add_one(harness: Harness, args) -> dict:
    """`python -m benchmarks.hosts add-host h4`: one command, timed until the worker is ready."""
    command = [sys.executable, "-m", "benchmarks.hosts", "--run-dir", str(harness.run_dir), "add-host", "h4",
               "--concurrency", str(HOST_CONCURRENCY)]  # fmt: skip
    if args.pinned:
        command += ["--models", "echo"]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=READY_TIMEOUT_S)
    report: dict = {
        "command": " ".join(["python", *command[1:3], "add-host", "h4"]),
        "exit_code": done.returncode,
        "output": done.stdout.strip() or done.stderr.strip()[-500:],
        "seconds_to_ready_worker": round(time.monotonic() - start, 2),
    }
    if not args.pinned and done.returncode == 0:
        report["echo_copies_before"] = live_ready_hosts(harness, "echo")
        wait_for(lambda: "h4" in live_ready_hosts(harness, "echo"), READY_TIMEOUT_S, "echo on h4")
        report["seconds_to_echo_on_h4"] = round(time.monotonic() - start, 2)
        report["echo_copies_after"] = live_ready_hosts(harness, "echo")
    return report


# --------------------------------------------------------------------------- report


def summary_markdown(record: dict) -> str:
    lines = [f"# Many hosts ({record['date']}, {record['mode']} workers)", ""]
    lines += ["## Aggregate throughput by host count", ""]
    lines += [
        "| engine | hosts | tok/s | ratio to 1 host | req ok | TTFT p50 ms | other processes' CPU share |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, levels in record["throughput"].items():
        base = levels[0]["tokens_per_s"] if levels else None
        for level in levels:
            lines.append(
                f"| {engine} | {level['hosts']} | {fmt(level['tokens_per_s'])} | "
                f"{fmt(ratio(level['tokens_per_s'], base), '.2f')} | {level['ok']}/{level['requests']} | "
                f"{fmt(level['ttft_p50_ms'])} | {fmt((level['cpu'] or {}).get('other_share'), '.0%')} |"
            )
    lines += [
        "",
        "All hosts share this machine's CPUs: SmolLM2 is CPU-bound, so more hosts cannot make it faster "
        "here (they compete for the same cores). The echo engine waits instead of computing, so its "
        "ratio shows the platform spreading requests over hosts.",
        "",
    ]
    if record.get("placement"):
        lines += ["## Placement (Replica rows)", ""]
        for model, hosts in record["placement"]["copies"].items():
            lines.append(f"- `{model}`: ready on {', '.join(hosts)}")
        lines.append(f"- worker labels: {json.dumps(record['placement']['worker_labels'])}")
        lines.append("")
    kill = record.get("kill")
    if kill:
        lines += ["## Killing a host", ""]
        lines.append(
            f"- killed `{kill['killed']}` while {kill['streams']} streams of `{kill['model']}` ran: "
            f"{kill['failed']} failed, seconds from the kill to their error: {kill['seconds_to_error']}"
        )
        lines.append(f"- errors: {kill['errors']}")
        if kill.get("rescheduled_s") is not None:
            lines.append(
                f"- `{kill['model']}` ready again on {kill['copies_after']} {kill['rescheduled_s']} s after the kill"
            )
        lines.append("")
    add = record.get("add")
    if add:
        lines += ["## Adding a host", ""]
        lines.append(
            f"- `{add['command']}`: exit {add['exit_code']}, worker ready in {add['seconds_to_ready_worker']} s"
        )
        if "seconds_to_echo_on_h4" in add:
            lines.append(
                f"- `echo` (replicas=3) on {add['echo_copies_after']} {add['seconds_to_echo_on_h4']} s after the "
                f"command started (before: {add['echo_copies_before']})"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="echo,smollm2", help="models measured for throughput: echo, smollm2")
    parser.add_argument("--clients", type=int, default=3 * HOST_CONCURRENCY, help="streams in flight")
    parser.add_argument("--requests", type=int, default=36, help="echo: requests per host count")
    parser.add_argument("--smollm2-requests", type=int, default=12, help="smollm2: requests per host count")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--pinned", action="store_true", help="workers with --models (no reconcile mode)")
    parser.add_argument("--out", type=Path, help="write many_hosts.json and summary.md there")
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        require_root_and_tools()
    except HarnessUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record: dict = {
        "date": dt.date.today().isoformat(),
        "mode": "pinned" if args.pinned else "reconcile",
        "clients": args.clients,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "host_concurrency": HOST_CONCURRENCY,
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    # SIGTERM (a timeout, `kill`) unwinds like Ctrl-C, so the harness below removes all it made.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_dir = Path(tempfile.mkdtemp(prefix="many-hosts-"))
    with Harness.create(run_dir, settings={"WORKER_HEARTBEAT_SECONDS": "1", "WORKER_DEAD_AFTER_SECONDS": "5"}) as h:
        print(f"harness {h.run_id} in {run_dir}", flush=True)
        register_models(h, args)
        h.start_web()
        print("throughput (closed loop, the same clients and requests on every host count):", flush=True)
        record["throughput"] = throughput(h, args)
        if not args.pinned:
            record["placement"] = placement(h)
            print(f"placement: {json.dumps(record['placement'])}", flush=True)
        record["kill"] = kill_one(h, args)
        print(f"kill: {json.dumps(record['kill'])}", flush=True)
        record["add"] = add_one(h, args)
        print(f"add: {json.dumps(record['add'])}", flush=True)
    summary = summary_markdown(record)
    print(summary)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "many_hosts.json").write_text(json.dumps(record, indent=2, default=str))
        (args.out / "summary.md").write_text(summary)
    failed = sum(level["errors"] for levels in record["throughput"].values() for level in levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
