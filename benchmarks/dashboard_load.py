"""Fill the admin dashboard with real SmolLM2 traffic from locust, then photograph it in headless chromium.

It starts a distributed deployment on this machine (tests/distributed/cluster.py: a private
redis-server, a fresh PostgreSQL database, two Celery workers and one daphne, with the commands the
README gives), registers two models on the bundled GGUF (`smollm2`, and `smollm2-chat` with the
prompt cache on) and issues three API keys, one of them rate-limited. Worker "a" serves smollm2;
worker "b" serves both. Then benchmarks/locustfile.py runs headless for --duration seconds, each
simulated application with its own key and model, and afterwards the admin is opened in chromium:
the dashboard grouped by model, by key and by worker, the request records and one key's page with
its usage by day are saved as PNG files in --out.

It prints what locust sent beside what the platform recorded (recorded/sent should be 1.000: every
request is recorded once, whatever its outcome) and, per group, the dashboard's totals beside a
direct count of the database rows (dashboard/rows should be 1.000). It never passes or fails on
timings.

    .venv/bin/python benchmarks/dashboard_load.py [--duration 300] [--users 6] [--out test-artifacts/dashboard]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.platforms import distributed_platform  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)
from tests.compat.browser import admin_login, chromium, new_page, screenshot  # noqa: E402
from tests.distributed.cluster import BIN, Cluster  # noqa: E402

MODELS = ("smollm2", "smollm2-chat")
KEYS = ("chat-app", "support-bot", "batch-jobs")  # batch-jobs carries an RPM limit, so some of its calls get 429
WORKERS = {"a": "smollm2", "b": "smollm2,smollm2-chat"}
ADMIN_USER, ADMIN_PASSWORD = "operator", "dashboard-load-password"
# The dashboard's group labels, computed in SQL straight from the table, to check its totals against.
GROUP_COLUMNS = {
    "model": "COALESCE(NULLIF(r.model_name, ''), '(unknown)')",
    "key": "k.name || ' (' || k.prefix || ')'",
    "worker": "COALESCE(NULLIF(r.worker, ''), '(none)')",
}
WIDE_VIEWPORT = {"width": 2560, "height": 1000}
SETTLE_SECONDS = 30  # abandoned streams are recorded by their worker a moment after the client hangs up


@dataclass
class LoadReport:
    sent: int = 0  # requests locust made
    failures: int = 0  # locust failures: unexpected statuses or broken streams
    recorded: int = 0  # request records in the run's own database
    statuses: Counter = field(default_factory=Counter)
    dashboard: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> {label: requests}
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> {label: count(*) from the table}
    screenshots: list[Path] = field(default_factory=list)


def prepare(cluster: Cluster, model_path: str, rpm_limit: int) -> list[str]:
    """Models, keys and an operator account; returns the keys' plaintexts in KEYS order."""
    cluster.manage("register_model", MODELS[0], "--source", model_path, "--engine", "llama_cpp")
    cluster.manage(
        "register_model", MODELS[1], "--source", model_path, "--engine", "llama_cpp", "--option", "prefix_cache=true"
    )
    keys = [
        cluster.manage("issue_api_key", name, *(["--rpm", str(rpm_limit)] if name == "batch-jobs" else [])).strip()
        for name in KEYS
    ]
    cluster.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        ADMIN_USER,
        "--email",
        "operator@example.com",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    return keys


def run_locust(base_url: str, keys: list[str], *, users: int, duration: int, out: Path) -> tuple[int, int]:
    """Run the locustfile headless; returns (requests sent, failures) from its final JSON stats.

    `--stop-timeout` lets every user finish the call it is making when the time is up, so the
    count includes it (locust's CSV files are written before that, so they can miss the last calls).
    """
    command = [
        str(BIN / "locust"),
        "-f",
        str(ROOT / "benchmarks" / "locustfile.py"),
        "--host",
        base_url,
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{duration}s",
        "--stop-timeout",
        "120",
        "--json-file",
        str(out / "locust_stats"),
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "LOAD_API_KEYS": ",".join(keys), "LOAD_MODELS": ",".join(MODELS)}
    print(f"[load] {users} locust users for {duration}s against {base_url}", flush=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 300)
    if result.returncode not in (0, 1):  # 1: some requests failed, reported below
        raise RuntimeError(f"locust exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    entries = json.loads((out / "locust_stats.json").read_text())
    print(f"{'locust call':<20} {'requests':>8} {'failures':>8} {'mean ms':>8}")
    for entry in sorted(entries, key=lambda e: e["name"]):
        mean = entry["total_response_time"] / max(entry["num_requests"], 1)
        print(f"{entry['name']:<20} {entry['num_requests']:>8} {entry['num_failures']:>8} {mean:>8.0f}")
    return sum(e["num_requests"] for e in entries), sum(e["num_failures"] for e in entries)


def count_rows(cluster: Cluster, group: str) -> dict[str, int]:
    rows = cluster.query(
        f"SELECT {GROUP_COLUMNS[group]}, count(*) FROM monitoring_requestrecord r "
        "LEFT JOIN models_registry_apikey k ON r.api_key_id = k.id GROUP BY 1"
    )
    return dict(rows)  # the database is the run's own, so every row is inside the dashboard's hour


def photograph(base_url: str, out: Path, report: LoadReport, key_id: int) -> None:
    """The dashboard by model, key and worker, the request list and one key's page, as the operator sees them."""
    with chromium() as browser, new_page(browser) as page:
        admin_login(page, base_url, ADMIN_USER, ADMIN_PASSWORD)
        for group in GROUP_COLUMNS:
            page.goto(f"{base_url}/admin/monitoring/dashboard/?window=hour&group={group}")
            totals = page.locator("#dashboard-totals .group-total")
            report.dashboard[group] = {
                totals.nth(i).get_attribute("data-group"): int(totals.nth(i).get_attribute("data-requests"))
                for i in range(totals.count())
            }
            report.screenshots.append(screenshot(page, out / f"dashboard-by-{group}.png"))
        page.set_viewport_size(WIDE_VIEWPORT)  # the request list has 15 columns
        page.goto(f"{base_url}/admin/monitoring/requestrecord/")
        report.screenshots.append(screenshot(page, out / "request-records.png"))
        page.goto(f"{base_url}/admin/models_registry/apikey/{key_id}/change/")
        report.screenshots.append(screenshot(page, out / "api-key-usage.png"))


def run(tmp: Path, out: Path, *, duration: int, users: int, rpm_limit: int = 12) -> LoadReport:
    out.mkdir(parents=True, exist_ok=True)
    report = LoadReport()
    with distributed_platform(tmp, "load") as cluster:
        keys = prepare(cluster, str(bundled_model_path()), rpm_limit)
        for name, models in WORKERS.items():
            cluster.start_worker(name, models, concurrency=4)
        base_url = cluster.start_web(ready=True)

        report.sent, report.failures = run_locust(base_url, keys, users=users, duration=duration, out=out)

        def recorded() -> int:
            return cluster.query("SELECT count(*) FROM monitoring_requestrecord")[0][0]

        deadline = time.monotonic() + SETTLE_SECONDS
        while recorded() < report.sent and time.monotonic() < deadline:
            time.sleep(0.5)
        report.recorded = recorded()
        report.statuses = Counter(
            dict(cluster.query("SELECT status_code, count(*) FROM monitoring_requestrecord GROUP BY 1"))
        )
        report.rows = {group: count_rows(cluster, group) for group in GROUP_COLUMNS}
        key_id = cluster.query("SELECT id FROM models_registry_apikey WHERE name = %s", KEYS[0])[0][0]
        photograph(base_url, out, report, key_id)
    return report


def print_report(report: LoadReport) -> None:
    print(
        f"\nlocust sent {report.sent} requests ({report.failures} failures); "
        f"the platform recorded {report.recorded}: recorded/sent = {report.recorded / max(report.sent, 1):.3f}"
    )
    print("statuses: " + ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items())))
    for group, totals in report.dashboard.items():
        print(f"\nby {group:<7} {'dashboard':>10} {'rows':>6} {'ratio':>6}")
        for label in sorted(set(totals) | set(report.rows.get(group, {}))):
            shown, rows = totals.get(label, 0), report.rows[group].get(label, 0)
            print(f"  {label:<40} {shown:>10} {rows:>6} {shown / max(rows, 1):>6.3f}")
    print("\nscreenshots:\n" + "\n".join(f"  {path}" for path in report.screenshots))
    print(
        json.dumps(
            {
                "sent": report.sent,
                "failures": report.failures,
                "recorded": report.recorded,
                "statuses": {str(k): v for k, v in report.statuses.items()},
                "dashboard": report.dashboard,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=300, help="seconds of load (default 300)")
    parser.add_argument("--users", type=int, default=6, help="simulated applications (default 6)")
    parser.add_argument("--rpm-limit", type=int, default=12, help="the batch-jobs key's requests per minute")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "dashboard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-load-") as tmp:
        report = run(Path(tmp), args.out, duration=args.duration, users=args.users, rpm_limit=args.rpm_limit)
    print_report(report)
    return 0 if report.failures == 0 and report.recorded == report.sent else 1


if __name__ == "__main__":
    sys.exit(main())
