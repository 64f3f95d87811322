"""The system sampler on this machine's real CPU, memory and disk, and the hosts in /v1/system/status."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from monitoring.host_samples import start_process_sampler
from monitoring.sampler import FIELDS, GPU_FIELDS, WINDOW, GpuProbe, SystemSampler

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sampler(tmp_path):
    return SystemSampler(disk_path=str(tmp_path), role="test", gpu=GpuProbe.open())


def test_a_sample_reads_this_host(sampler, tmp_path):
    sample = sampler.sample()
    assert set(sample) == {"ts", *FIELDS}
    assert abs(sample["ts"] - time.time()) < 5
    assert 0 <= sample["cpu_percent"] <= 100
    memory = psutil.virtual_memory()
    assert sample["memory_total_bytes"] == memory.total
    assert 0 < sample["memory_used_bytes"] < memory.total
    disk = psutil.disk_usage(str(tmp_path))
    assert sample["disk_total_bytes"] == disk.total
    assert sample["disk_used_bytes"] == pytest.approx(disk.used, abs=2**30)
    assert 0 <= sample["disk_percent"] <= 100
    assert sample["process_rss_bytes"] == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)


def test_gpu_fields_are_none_without_a_gpu_and_real_with_one(sampler):
    probe = GpuProbe.open()
    sample = sampler.sample()
    if probe is None:  # this machine: no nvidia-ml-py, or no device
        assert all(sample[field] is None for field in GPU_FIELDS)
    else:
        assert sample["gpu_count"] >= 1 and sample["gpu_memory_total_bytes"] > 0
        assert 0 <= sample["gpu_utilization_percent"] <= 100


def test_a_failing_gpu_reads_as_none_and_cpu_sampling_goes_on(tmp_path):
    class FallenOffTheBus(GpuProbe):
        def __init__(self):
            super().__init__(nvml=None, handles=[object()])

        def read(self):
            raise RuntimeError("GPU is lost")

    sampler = SystemSampler(disk_path=str(tmp_path), gpu=FallenOffTheBus())
    first, second = sampler.sample(), sampler.sample()
    assert all(first[f] is None and second[f] is None for f in GPU_FIELDS)
    assert second["memory_total_bytes"] > 0


def test_the_window_keeps_the_last_300_samples(sampler):
    taken = [sampler.sample() for _ in range(WINDOW + 5)]
    assert WINDOW == 300
    assert sampler.samples() == taken[5:]
    assert sampler.latest() == taken[-1]


def test_averages_cover_the_last_minutes_only(sampler):
    taken = []
    for _ in range(3):
        taken.append(sampler.sample())
        time.sleep(0.05)
    everything = sampler.averages(1)
    assert everything["samples"] == 3
    for field in ("cpu_percent", "memory_used_bytes", "disk_percent", "process_rss_bytes"):
        assert everything[field] == pytest.approx(sum(s[field] for s in taken) / 3, abs=0.01)
    last_only = sampler.averages(1, now=taken[-1]["ts"] + 60 - 0.01)
    assert last_only["samples"] == 1
    assert last_only["process_rss_bytes"] == pytest.approx(taken[-1]["process_rss_bytes"], abs=0.01)
    none = sampler.averages(5, now=taken[-1]["ts"] + 5 * 60 + 1)
    assert none["samples"] == 0 and all(none[field] is None for field in FIELDS)


def test_json_export_round_trips(sampler):
    taken = [sampler.sample() for _ in range(4)]
    exported = json.loads(sampler.to_json())
    assert exported["samples"] == taken
    assert (exported["host"], exported["pid"], exported["role"]) == (sampler.host, os.getpid(), "test")
    assert exported["fields"] == list(FIELDS)


def test_background_thread_samples_and_publishes_until_stopped(sampler):
    published = []
    sampler.start(0.05, publish=published.append)
    deadline = time.monotonic() + 10
    while len(published) < 3:
        assert time.monotonic() < deadline, "the sampler thread did not tick"
        time.sleep(0.02)
    sampler.stop()
    assert not sampler.running
    count = len(sampler.samples())
    time.sleep(0.2)
    assert len(sampler.samples()) == count, "sampling went on after stop()"
    summary = published[-1]
    assert summary["latest"] in sampler.samples() and summary["interval_seconds"] == 0.05
    assert set(summary["averages"]) == {"1m", "5m"} and summary["averages"]["1m"]["samples"] >= 3


def test_the_process_sampler_starts_once(settings):
    settings.SYSTEM_SAMPLE_SECONDS = 5
    first = start_process_sampler(role="web")
    second = start_process_sampler(role="worker", name="ignored")
    assert first is second and first.running
    assert second.role == "web"  # the first start decides; the asgi module may have made it already
    assert [t.name for t in threading.enumerate()].count("system-sampler") == 1


def test_a_zero_interval_turns_the_background_sampler_off_and_status_samples_on_demand(tmp_path):
    code = (
        "from serving.hosts import hosts_status, start_sampling; "
        "sampler = start_sampling(role='web'); (host,) = hosts_status(); "
        "print('running', sampler.running, 'samples', len(sampler.samples()), host['latest'] is not None)"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    environ["DATABASE_URL"] = f"sqlite:///{tmp_path / 'sampler.sqlite3'}"
    off = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**environ, "SYSTEM_SAMPLE_SECONDS": "0"},
        timeout=120,
    )
    assert "running False samples 1 True" in off.stdout, off.stderr
    on = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**environ, "SYSTEM_SAMPLE_SECONDS": "5"},
        timeout=120,
    )
    assert "running True" in on.stdout, on.stderr


@pytest.mark.django_db(transaction=True)
async def test_status_shows_this_process_in_embedded_mode(client, echo_model):
    body = (await client.get("/v1/system/status")).json()
    (host,) = body["hosts"]
    assert host["pid"] == os.getpid() and host["host"]
    assert set(host["latest"]) == {"ts", *FIELDS} and host["latest"]["memory_total_bytes"] > 0
    assert set(host["averages"]) == {"1m", "5m"}
    assert host["averages"]["1m"]["samples"] >= 1 and host["averages"]["5m"]["memory_percent"] > 0
