"""A snapshot of this host's CPU, memory and disk, for status pages."""

import os
import socket

import psutil
from django.conf import settings


def system_snapshot() -> dict:
    """CPU, memory and disk use of this host right now."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(settings.BASE_DIR))
    process = psutil.Process(os.getpid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory": {"total_bytes": memory.total, "available_bytes": memory.available, "percent": memory.percent},
        "disk": {"total_bytes": disk.total, "free_bytes": disk.free, "percent": disk.percent},
        "process_rss_bytes": process.memory_info().rss,
    }
