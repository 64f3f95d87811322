"""A per-process sampler of host CPU, memory, disk and GPU, keeping a window of recent samples.

Every web and worker process runs one daemon thread that takes a sample every
SYSTEM_SAMPLE_SECONDS: a handful of psutil calls, plus NVML ones where nvidia-ml-py is
installed and a GPU exists. Requests never pay for it. In distributed mode each tick also
publishes the process's summary to Redis (monitoring/host_samples.py), so any web process
can show every host.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

import psutil

logger = logging.getLogger(__name__)

WINDOW = 300  # samples kept: 25 minutes at the default 5 s

# Every numeric field of a sample; GPU ones are None where no GPU can be read.
FIELDS = (
    "cpu_percent",
    "load_1m",
    "memory_used_bytes",
    "memory_total_bytes",
    "memory_percent",
    "disk_used_bytes",
    "disk_total_bytes",
    "disk_percent",
    "process_rss_bytes",
    "gpu_count",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpu_utilization_percent",
)
GPU_FIELDS = ("gpu_count", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpu_utilization_percent")
NO_GPU = dict.fromkeys(GPU_FIELDS)


class GpuProbe:
    """NVML handles for this host's GPUs, summed over devices (utilization is their mean)."""

    def __init__(self, nvml, handles: list):
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> GpuProbe | None:
        """A probe when nvidia-ml-py is importable and NVML finds at least one device, else None."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:  # no driver, or no device: the common case on CPU hosts
            logger.info("no GPU metrics: %s", exc)
            return None
        return cls(pynvml, handles) if handles else None

    def read(self) -> dict:
        used = total = 0
        utilization = []
        for handle in self._handles:
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            used += memory.used
            total += memory.total
            utilization.append(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        return {
            "gpu_count": len(self._handles),
            "gpu_memory_used_bytes": used,
            "gpu_memory_total_bytes": total,
            "gpu_utilization_percent": sum(utilization) / len(utilization),
        }


class SystemSampler:
    """Samples this host (and this process's memory) into a bounded window."""

    def __init__(
        self, *, disk_path: str, role: str = "", name: str = "", window: int = WINDOW, gpu: GpuProbe | None = None
    ):
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.role = role
        self.name = name
        self.disk_path = disk_path
        self.interval: float | None = None
        self._gpu = gpu
        self._gpu_failed = False
        self._samples: deque[dict] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._process = psutil.Process(self.pid)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cpu_threads: set[int] = set()

    # --- sampling ---

    def sample(self) -> dict:
        """Take one sample now and add it to the window."""
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        sample = {
            "ts": round(time.time(), 3),
            "cpu_percent": self._cpu_percent(),
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "memory_used_bytes": memory.total - memory.available,
            "memory_total_bytes": memory.total,
            "memory_percent": memory.percent,
            "disk_used_bytes": disk.used,
            "disk_total_bytes": disk.total,
            "disk_percent": disk.percent,
            "process_rss_bytes": self._process.memory_info().rss,
            **self._gpu_fields(),
        }
        with self._lock:
            self._samples.append(sample)
        return sample

    def _cpu_percent(self) -> float:
        # psutil measures since the calling thread's previous call. A thread's first call has
        # nothing to compare with and would say 0.0, so it measures a short interval instead.
        thread = threading.get_ident()
        if thread in self._cpu_threads:
            return psutil.cpu_percent(interval=None)
        self._cpu_threads.add(thread)
        return psutil.cpu_percent(interval=0.1)

    def _gpu_fields(self) -> dict:
        if self._gpu is None or self._gpu_failed:
            return NO_GPU
        try:
            return self._gpu.read()
        except Exception as exc:  # a GPU that falls off the bus must not stop CPU sampling
            logger.warning("GPU metrics stopped: %s", exc)
            self._gpu_failed = True
            return NO_GPU

    # --- reading ---

    def samples(self) -> list[dict]:
        with self._lock:
            return list(self._samples)

    def latest(self) -> dict | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def averages(self, minutes: float, *, now: float | None = None) -> dict:
        """Mean of every field over the samples of the last `minutes`; None where none had a value."""
        cutoff = (time.time() if now is None else now) - minutes * 60
        recent = [s for s in self.samples() if s["ts"] >= cutoff]
        result: dict = {"minutes": minutes, "samples": len(recent)}
        for field in FIELDS:
            values = [s[field] for s in recent if s.get(field) is not None]
            result[field] = round(sum(values) / len(values), 2) if values else None
        return result

    def summary(self) -> dict:
        """Who this is, the latest sample (taken now if there is none) and 1- and 5-minute averages."""
        latest = self.latest() or self.sample()
        return {
            "host": self.host,
            "pid": self.pid,
            "role": self.role,
            "name": self.name,
            "interval_seconds": self.interval,
            "latest": latest,
            "averages": {"1m": self.averages(1), "5m": self.averages(5)},
        }

    def to_json(self) -> str:
        """The whole window, for export."""
        return json.dumps(
            {
                "host": self.host,
                "pid": self.pid,
                "role": self.role,
                "name": self.name,
                "interval_seconds": self.interval,
                "fields": list(FIELDS),
                "samples": self.samples(),
            }
        )

    # --- the background thread ---

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, interval: float, publish: Callable[[dict], None] | None = None) -> None:
        """Sample every `interval` seconds on a daemon thread, handing each summary to `publish`."""
        self.interval = interval
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval, publish), name="system-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self, interval: float, publish: Callable[[dict], None] | None) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
                if publish is not None:
                    publish(self.summary())
            except Exception:
                logger.warning("system sample failed", exc_info=True)
            self._stop.wait(interval)
