"""Charts and targets for a stress suite's results (the folder run_stress_test.sh wrote).

Each run folder holds locust's `locust.json` (the totals, counted after the last calls ended),
`locust_stats.csv` (the same, from before them: used when there is no JSON) and
`locust_stats_history.csv` (over time), and the CPU sample `cpu.csv`. This draws, over time and one line per run:

    response_times.png  median (solid) and 95th percentile (dashed) response time
    throughput.png      requests per second
    failures.png        failures per second, and the running count of failures
    cpu.png             the machine's CPU use, and the server's when it was sampled

and holds every run to the targets: success > 95%, average response < 3 s, > 50 requests a
minute, mean CPU < 80% (the server's processes when they were sampled, else the machine's). It prints them, writes summary.md and summary.json beside the charts,
and never fails on the numbers (exit 1 only when there is nothing to analyse).

    python tests/stress/analyze_results.py RESULTS_DIR [--charts-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

TARGET_SUCCESS_RATE = 0.95
TARGET_RESPONSE_S = 3.0
TARGET_REQUESTS_PER_MIN = 50.0
TARGET_CPU_PERCENT = 80.0
AGGREGATED = "Aggregated"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


@dataclass
class Run:
    name: str
    requests: int
    failures: int
    avg_response_ms: float | None
    median_response_ms: float | None
    p95_response_ms: float | None
    requests_per_s: float | None
    cpu_mean_percent: float | None  # the server's own when it was sampled, else the machine's
    cpu_max_percent: float | None
    cpu_of: str  # "server" or "machine"
    machine_cpu_mean_percent: float | None
    by_name: dict[str, dict] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict, repr=False)
    cpu: dict[str, list] = field(default_factory=dict, repr=False)

    @property
    def success_rate(self) -> float | None:
        return (self.requests - self.failures) / self.requests if self.requests else None

    @property
    def requests_per_min(self) -> float | None:
        return None if self.requests_per_s is None else self.requests_per_s * 60

    def targets(self) -> list[dict]:
        """Each target with this run's value and whether it was met (None: not measured)."""
        avg_s = None if self.avg_response_ms is None else self.avg_response_ms / 1000

        def check(name, value, met, shown):
            return {
                "target": name,
                "value": value,
                "shown": shown if value is not None else "n/a",
                "met": None if value is None else met,
            }

        return [
            check(
                f"success rate > {TARGET_SUCCESS_RATE:.0%}",
                self.success_rate,
                self.success_rate is not None and self.success_rate > TARGET_SUCCESS_RATE,
                f"{(self.success_rate or 0):.1%}",
            ),
            check(
                f"average response < {TARGET_RESPONSE_S:.0f} s",
                avg_s,
                avg_s is not None and avg_s < TARGET_RESPONSE_S,
                f"{(avg_s or 0):.2f} s",
            ),
            check(
                f"throughput > {TARGET_REQUESTS_PER_MIN:.0f} req/min",
                self.requests_per_min,
                self.requests_per_min is not None and self.requests_per_min > TARGET_REQUESTS_PER_MIN,
                f"{(self.requests_per_min or 0):.0f} req/min",
            ),
            check(
                f"mean CPU < {TARGET_CPU_PERCENT:.0f}%",
                self.cpu_mean_percent,
                self.cpu_mean_percent is not None and self.cpu_mean_percent < TARGET_CPU_PERCENT,
                f"{self.cpu_of} {(self.cpu_mean_percent or 0):.0f}% (max {(self.cpu_max_percent or 0):.0f}%)",
            ),
        ]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _histogram_percentile(histogram: dict[float, int], q: float) -> float | None:
    """The response time (ms) below which a share q of the requests fell, from locust's rounded histogram."""
    count = sum(histogram.values())
    if not count:
        return None
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= q * count:
            return value
    return max(histogram)


def _totals_from_json(path: Path) -> tuple[dict, dict[str, dict]] | None:
    """Totals from locust's --json-file, written after --stop-timeout: it counts the calls that were still
    running when the run time ended, which the CSV files (written before) miss."""
    if not path.is_file():
        return None
    entries = json.loads(path.read_text())
    if not entries:
        return None
    histogram: dict[float, int] = {}
    by_name = {}
    for entry in entries:
        times = {float(ms): n for ms, n in dict(entry["response_times"]).items()}
        for ms, n in times.items():
            histogram[ms] = histogram.get(ms, 0) + n
        by_name[entry["name"]] = {
            "requests": entry["num_requests"],
            "failures": entry["num_failures"],
            "avg_ms": entry["total_response_time"] / entry["num_requests"] if entry["num_requests"] else None,
            "p95_ms": _histogram_percentile(times, 0.95),
        }
    requests = sum(e["num_requests"] for e in entries)
    span = max(e["last_request_timestamp"] or 0 for e in entries) - min(e["start_time"] for e in entries)
    total = {
        "requests": requests,
        "failures": sum(e["num_failures"] for e in entries),
        "avg_ms": sum(e["total_response_time"] for e in entries) / requests if requests else None,
        "median_ms": _histogram_percentile(histogram, 0.5),
        "p95_ms": _histogram_percentile(histogram, 0.95),
        "requests_per_s": requests / span if span > 0 else None,
    }
    return total, by_name


def load_run(folder: Path) -> Run | None:
    """One run folder's numbers, or None when it has no locust stats."""
    stats = _rows(folder / "locust_stats.csv")
    row = next((row for row in stats if row.get("Name") == AGGREGATED), None)
    from_json = _totals_from_json(folder / "locust.json")
    if from_json is not None:
        total, by_name = from_json
    elif row is not None:
        total = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "avg_ms": _number(row["Average Response Time"]),
            "median_ms": _number(row["Median Response Time"]),
            "p95_ms": _number(row.get("95%")),
            "requests_per_s": _number(row["Requests/s"]),
        }
        by_name = {
            r["Name"]: {
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "avg_ms": _number(r["Average Response Time"]),
                "p95_ms": _number(r.get("95%")),
            }
            for r in stats
            if r.get("Name") != AGGREGATED
        }
    else:
        return None
    history_rows = [row for row in _rows(folder / "locust_stats_history.csv") if row.get("Name") == AGGREGATED]
    t0 = _number(history_rows[0]["Timestamp"]) if history_rows else 0
    history = {
        "elapsed_s": [(_number(row["Timestamp"]) or 0) - (t0 or 0) for row in history_rows],
        "users": [_number(row["User Count"]) for row in history_rows],
        "requests_per_s": [_number(row["Requests/s"]) for row in history_rows],
        "failures_per_s": [_number(row["Failures/s"]) for row in history_rows],
        "p50_ms": [_number(row["50%"]) for row in history_rows],
        "p95_ms": [_number(row["95%"]) for row in history_rows],
        "failures_total": [_number(row["Total Failure Count"]) for row in history_rows],
    }
    cpu_rows = _rows(folder / "cpu.csv")
    cpu = {
        "elapsed_s": [_number(row["elapsed_s"]) for row in cpu_rows],
        "percent": [_number(row["cpu_percent"]) for row in cpu_rows],
        "server_percent": [_number(row.get("server_cpu_percent")) for row in cpu_rows],
    }
    machine = [value for value in cpu["percent"] if value is not None]
    server = [value for value in cpu["server_percent"] if value is not None]
    samples = server or machine
    return Run(
        name=folder.name,
        requests=total["requests"],
        failures=total["failures"],
        avg_response_ms=total["avg_ms"],
        median_response_ms=total["median_ms"],
        p95_response_ms=total["p95_ms"],
        requests_per_s=total["requests_per_s"],
        cpu_mean_percent=sum(samples) / len(samples) if samples else None,
        cpu_max_percent=max(samples) if samples else None,
        cpu_of="server" if server else "machine",
        machine_cpu_mean_percent=sum(machine) / len(machine) if machine else None,
        by_name=by_name,
        history=history,
        cpu=cpu,
    )


def load_runs(results: Path) -> list[Run]:
    folders = sorted(p for p in results.iterdir() if p.is_dir())
    if (results / "locust_stats.csv").is_file() or (results / "locust.json").is_file():  # one run's folder
        folders = [results]
    return [run for folder in folders if (run := load_run(folder)) is not None]


# --------------------------------------------------------------------------- charts


def draw_charts(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colours = plt.get_cmap("tab10")
    written = []

    def figure(path_name: str, title: str, ylabel: str, panels: int = 1):
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels + 3, 4.2), squeeze=False)
        for ax in axes[0]:
            ax.set_xlabel("seconds into the run")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        return fig, axes[0], out / path_name

    def save(fig, axes, path):
        for ax in axes:
            ax.set_ylim(bottom=0)  # counts and times: a flat zero line stays at the bottom
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, axes, path = figure("response_times.png", "Response time: median (solid), 95th percentile (dashed)", "ms")
    for index, run in enumerate(runs):
        h = run.history
        axes[0].plot(h["elapsed_s"], _gaps(h["p50_ms"]), color=colours(index), label=run.name)
        axes[0].plot(h["elapsed_s"], _gaps(h["p95_ms"]), color=colours(index), linestyle="--")
    axes[0].axhline(TARGET_RESPONSE_S * 1000, color="grey", linewidth=0.8, linestyle=":", label="3 s target")
    save(fig, axes, path)

    fig, axes, path = figure("throughput.png", "Throughput", "requests/s")
    for index, run in enumerate(runs):
        axes[0].plot(
            run.history["elapsed_s"],
            _gaps(run.history["requests_per_s"]),
            color=colours(index),
            label=f"{run.name} (mean {run.requests_per_min or 0:.0f}/min)",
        )
    axes[0].axhline(TARGET_REQUESTS_PER_MIN / 60, color="grey", linewidth=0.8, linestyle=":", label="50/min target")
    save(fig, axes, path)

    fig, axes, path = figure("failures.png", "Failures", "failures/s", panels=2)
    for index, run in enumerate(runs):
        axes[0].plot(
            run.history["elapsed_s"], _gaps(run.history["failures_per_s"]), color=colours(index), label=run.name
        )
        axes[1].plot(
            run.history["elapsed_s"],
            _gaps(run.history["failures_total"]),
            color=colours(index),
            label=f"{run.name} ({run.failures}/{run.requests})",
        )
    axes[1].set_ylabel("failures so far")
    save(fig, axes, path)

    fig, axes, path = figure(
        "cpu.png", "CPU use: the whole machine (solid), the server's processes (dashed)", "% of all cores"
    )
    for index, run in enumerate(runs):
        axes[0].plot(
            run.cpu["elapsed_s"],
            _gaps(run.cpu["percent"]),
            color=colours(index),
            label=f"{run.name} machine (mean {run.machine_cpu_mean_percent or 0:.0f}%)",
        )
        if run.cpu_of == "server":
            axes[0].plot(
                run.cpu["elapsed_s"],
                _gaps(run.cpu["server_percent"]),
                color=colours(index),
                linestyle="--",
                label=f"{run.name} server (mean {run.cpu_mean_percent or 0:.0f}%)",
            )
    axes[0].axhline(TARGET_CPU_PERCENT, color="grey", linewidth=0.8, linestyle=":", label="80% target")
    axes[0].set_ylim(top=105)
    save(fig, axes, path)
    return written


def _gaps(values: list[float | None]) -> list[float]:
    """None (locust's N/A before the first response) as NaN, which matplotlib leaves as a gap."""
    return [float("nan") if value is None else value for value in values]


# --------------------------------------------------------------------------- report


def report_lines(runs: list[Run]) -> list[str]:
    lines = []
    for run in runs:
        lines.append(
            f"{run.name}: {run.requests} requests, {run.failures} failures, average "
            f"{(run.avg_response_ms or 0):.0f} ms, p95 {(run.p95_response_ms or 0):.0f} ms"
        )
        for t in run.targets():
            verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
            lines.append(f"    {t['target']:<28} {t['shown']:>24}  {verdict}")
        for name, entry in sorted(run.by_name.items()):
            lines.append(
                f"      {name:<20} {entry['requests']:>6} requests {entry['failures']:>5} failures "
                f"avg {(entry['avg_ms'] or 0):>7.0f} ms"
            )
    return lines


def write_summary(runs: list[Run], out: Path, charts: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = [
        {
            **{k: v for k, v in asdict(run).items() if k not in ("history", "cpu")},
            "success_rate": run.success_rate,
            "requests_per_min": run.requests_per_min,
            "targets": run.targets(),
        }
        for run in runs
    ]
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = [
        "| run | requests | failures | success | avg ms | p95 ms | req/min | CPU mean | CPU max | machine CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        table.append(
            f"| {run.name} | {run.requests} | {run.failures} | {(run.success_rate or 0):.1%} | "
            f"{(run.avg_response_ms or 0):.0f} | {(run.p95_response_ms or 0):.0f} | "
            f"{(run.requests_per_min or 0):.0f} | {run.cpu_of} {(run.cpu_mean_percent or 0):.0f}% | "
            f"{(run.cpu_max_percent or 0):.0f}% | {(run.machine_cpu_mean_percent or 0):.0f}% |"
        )
    text = [
        "# Stress suite",
        "",
        f"Targets: success > {TARGET_SUCCESS_RATE:.0%}, average response < {TARGET_RESPONSE_S:.0f} s, "
        f"> {TARGET_REQUESTS_PER_MIN:.0f} requests/min, mean CPU < {TARGET_CPU_PERCENT:.0f}% "
        "(of all cores: the server's processes when run_stress_test.sh had --server-pid, else the whole "
        "machine, locust and anything else running there included).",
        "",
        *table,
        "",
        "```",
        *report_lines(runs),
        "```",
        "",
        *[f"![{path.stem}]({path.name})" for path in charts],
        "",
    ]
    (out / "summary.md").write_text("\n".join(text), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the folder run_stress_test.sh wrote")
    parser.add_argument(
        "--charts-dir", type=Path, default=None, help="where charts and summaries go (default: results)"
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.results) if args.results.is_dir() else []
    if not runs:
        print(f"no locust results (locust_stats.csv) under {args.results}", file=sys.stderr)
        return 1
    out = args.charts_dir or args.results
    charts = draw_charts(runs, out)
    write_summary(runs, out, charts)
    print("\n".join(report_lines(runs)))
    print(f"\ncharts: {', '.join(path.name for path in charts)}; summary.md and summary.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
