"""Health and system status."""

from asgiref.sync import sync_to_async
from django.conf import settings

from monitoring.host_samples import hosts_status
from monitoring.system import system_snapshot

from .. import dispatch


async def health() -> tuple[bool, str]:
    """Ready when at least one enabled model has a loaded engine in this process."""
    return await dispatch.readiness()


async def system_status() -> dict:
    ready, reason = await health()
    return {
        "mode": dispatch.MODE,
        "ready": ready,
        "reason": reason,
        "inference_engine_setting": settings.INFERENCE_ENGINE,
        "platform": dispatch.platform_info(),
        "engines": dispatch.engine_states(),
        "system": await sync_to_async(system_snapshot, thread_sensitive=False)(),
        # Every web and worker process (distributed) or this one (embedded): latest sample, averages.
        "hosts": await sync_to_async(hosts_status, thread_sensitive=False)(),
    }
