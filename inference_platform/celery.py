"""The Celery app. Workers host engines in distributed mode (REDIS_URL set):

celery -A inference_platform worker [--labels gpu]
"""

import os
import sys
from pathlib import Path

from celery import Celery
from celery.schedules import crontab
from click import Option

from inference_platform.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_platform.settings")
if Path(sys.argv[0]).name == "celery":
    # Celery reads the settings while parsing its own options, which would bury a wrong one in a
    # click traceback. Other programs (manage.py, the ASGI app) check it themselves.
    settings_or_exit()

# The generation task lives in serving/, which is not a Django app: autodiscovery would miss it.
app = Celery("inference_platform", include=["serving.worker.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.worker_pool = "threads"  # jobs wait on the engine loop; threads are enough
app.user_options["worker"].add(
    Option(
        ["--models"],
        default=None,
        help='Pin the worker to these comma-separated models, or "all" (WORKER_MODELS); '
        "default: what the deployments in the admin place on it.",
    )
)
app.user_options["worker"].add(
    Option(["--labels"], default=None, help="Comma-separated placement labels (WORKER_LABELS).")
)
app.steps["worker"].add("serving.worker.bootstep:EngineHostStep")
app.autodiscover_tasks()
# Run with `celery -A inference_platform beat`; one beat process per deployment.
app.conf.beat_schedule = {
    "prune-request-records": {
        "task": "monitoring.prune_request_records",
        "schedule": crontab(hour=3, minute=17),
        "options": {"queue": "default"},
    },
    "prune-stored-responses": {
        "task": "api.prune_stored_responses",
        "schedule": crontab(hour=3, minute=27),
        "options": {"queue": "default"},
    },
}
