"""Serving one request, whatever protocol it came in by: its route, the features it may use, its chunks.

A protocol module (api/openai/) parses a body into a GenerationRequest and the features it
uses, then calls these in order inside the request's lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from engines.base import Chunk, GenerationRequest
from models_registry.models import ApiKey
from models_registry.selectors import served_model_for_key_recent

from . import dispatch
from .errors import ModelNotFound, UnsupportedParameter
from .lifecycle import RequestLifecycle
from .route import Route, route_for

logger = logging.getLogger(__name__)


async def route_request(*, key: ApiKey, name: str) -> Route:
    """The route of the model called `name` (or aliased so) that the key may use; 404 otherwise.

    The key's models are remembered for a second (models_registry.selectors), and a route per
    model version (serving.route), so a busy key's request is routed without a thread or a query.
    """
    model = await served_model_for_key_recent(key=key, name=name)
    if model is None:
        raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
    return route_for(model)


def require_features(route: Route, used: Mapping[str, str]) -> None:
    """Refuse (400) the first feature in `used` (feature -> the parameter asking for it) the engine lacks.

    Features an engine does not implement are never silently ignored.
    """
    for feature, param in used.items():
        if feature not in route.capabilities:
            raise UnsupportedParameter(
                f"The '{param}' parameter is not supported by the {route.engine} engine serving "
                f"model `{route.model.name}`.",
                param=param,
            )


async def generate(life: RequestLifecycle, route: Route, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
    """Send the request to the host that serves its route; chunks come back as the engine makes them."""
    if settings.LOG_PROMPTS:
        logger.info("request %s prompt: %r", life.request_id, request.messages or request.prompt)
    # Tokens can take minutes. Give this request's database connection back meanwhile (each
    # request runs its ORM calls on its own thread, so each would hold one): otherwise a few
    # hundred requests in flight pass PostgreSQL's max_connections and new ones fail.
    await sync_to_async(close_old_connections)()
    return dispatch.generate(route, request, record=life.job_record(), on_started=life.host_started)
