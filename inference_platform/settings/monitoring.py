"""Monitoring: system samples, who may read /metrics, and how long request records are kept."""

from django.core.exceptions import ImproperlyConfigured

from .core import DEBUG
from .environment import env

# Each web and worker process samples CPU, memory, disk and GPU this often (0 turns it off;
# status pages then sample on demand). See monitoring/sampler.py.
SYSTEM_SAMPLE_SECONDS = env("SYSTEM_SAMPLE_SECONDS")
# Who may read GET /metrics: "open", "staff" (an admin session) or "token" (Bearer METRICS_TOKEN).
# Open by default only while DEBUG, so a local Prometheus scrapes the embedded mode as is.
METRICS_ACCESS = env("METRICS_ACCESS") or ("open" if DEBUG else "token")
if METRICS_ACCESS not in ("open", "staff", "token"):
    raise ImproperlyConfigured(f"METRICS_ACCESS={METRICS_ACCESS!r}; choose one of open, staff, token")
METRICS_TOKEN = env("METRICS_TOKEN")  # no default: with "token" and none set, /metrics answers 403
# Celery beat prunes request records older than this daily (0 keeps them forever), this many rows
# per transaction; `manage.py prune_request_records` does the same on demand.
RECORD_RETENTION_DAYS = env("RECORD_RETENTION_DAYS")
RECORD_RETENTION_BATCH_SIZE = env("RECORD_RETENTION_BATCH_SIZE")
if RECORD_RETENTION_DAYS < 0 or RECORD_RETENTION_BATCH_SIZE < 1:
    raise ImproperlyConfigured("RECORD_RETENTION_DAYS must be >= 0 and RECORD_RETENTION_BATCH_SIZE >= 1")
