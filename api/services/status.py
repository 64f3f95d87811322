"""Health and system status."""

from typing import Annotated, Any, Literal, NotRequired, TypedDict, cast

from asgiref.sync import sync_to_async
from django.conf import settings

from models_registry.engine_choice import platform_info
from monitoring.system import system_snapshot
from serving import dispatch
from serving.hosts import hosts_status

from ..typed_shapes import Field

Mode = Literal["embedded", "distributed"]


class Health(TypedDict):
    status: Literal["ok", "unavailable"]
    reason: Annotated[str, Field(help_text="`ready`, or why no engine can serve yet.")]


class SystemStatus(TypedDict):
    """Platform facts; the nested objects vary with the hardware and the engines loaded."""

    mode: Mode
    ready: bool
    reason: str
    inference_engine_setting: str
    platform: Annotated[dict[str, Any], Field(help_text="Hardware facts: OS, CPU, GPUs, available engine libraries.")]
    engines: Annotated[list[dict[str, Any]], Field(help_text="Engines loaded in this process.")]
    system: Annotated[dict[str, Any], Field(help_text="CPU, memory and disk use of this host.")]
    hosts: NotRequired[
        Annotated[list[dict[str, Any]], Field(help_text="Latest system sample of every web and worker process.")]
    ]


async def health() -> tuple[bool, str]:
    """Ready when at least one enabled model has a loaded engine in this process."""
    return await dispatch.readiness()


async def health_answer() -> tuple[int, Health]:
    """/health's status code and body: 200 when ready, else 503 with the reason."""
    ready, reason = await health()
    return (200 if ready else 503), {"status": "ok" if ready else "unavailable", "reason": reason}


async def system_status() -> SystemStatus:
    ready, reason = await health()
    return {
        "mode": cast(Mode, dispatch.MODE),
        "ready": ready,
        "reason": reason,
        "inference_engine_setting": settings.INFERENCE_ENGINE,
        "platform": platform_info(),
        "engines": dispatch.engine_states(),
        "system": await sync_to_async(system_snapshot, thread_sensitive=False)(),
        # Every web and worker process (distributed) or this one (embedded): latest sample, averages.
        "hosts": await sync_to_async(hosts_status, thread_sensitive=False)(),
    }
