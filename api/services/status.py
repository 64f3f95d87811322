"""Health and system status."""

from asgiref.sync import sync_to_async
from django.conf import settings

from models_registry.engine_choice import platform_info
from monitoring.system import system_snapshot
from serving import dispatch
from serving.hosts import hosts_status


async def health() -> tuple[bool, str]:
    """Ready when at least one enabled model has a loaded engine in this process."""
    return await dispatch.readiness()


async def health_answer() -> tuple[int, dict]:
    """/health's status code and body: 200 when ready, else 503 with the reason."""
    ready, reason = await health()
    return (200 if ready else 503), {"status": "ok" if ready else "unavailable", "reason": reason}


async def system_status() -> dict:
    ready, reason = await health()
    return {
        "mode": dispatch.MODE,
        "ready": ready,
        "reason": reason,
        "inference_engine_setting": settings.INFERENCE_ENGINE,
        "platform": platform_info(),
        "engines": dispatch.engine_states(),
        "system": await sync_to_async(system_snapshot, thread_sensitive=False)(),
        # Every web and worker process (distributed) or this one (embedded): latest sample, averages.
        "hosts": await sync_to_async(hosts_status, thread_sensitive=False)(),
    }
