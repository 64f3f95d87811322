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

from engines.base import Chunk, GenerationRequest, Task
from models_registry.models import ApiKey, ServedModel
from models_registry.selectors import served_model_for_key_recent, served_models_for_key_recent

from . import dispatch
from .errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from .lifecycle import RequestLifecycle
from .route import Route, route_for

logger = logging.getLogger(__name__)


async def route_request(*, key: ApiKey, name: str | None, task: Task = "generate") -> Route:
    """The route of the model called `name` (or aliased so) that the key may use; 404 otherwise.

    `task` is the job: generation needs a generate model, embeddings an embed model, and the
    tokenizer jobs take either; a model of the wrong task, or whose engine lacks the job, is a
    400 naming `model`. Only tokenizer jobs may leave `name` out (see `_default_model`).

    The key's models are remembered for a second (models_registry.selectors), and a route per
    model version (serving.route), so a busy key's request is routed without a thread or a query.
    """
    if name is None:
        model = await _default_model(key)
    else:
        named = await served_model_for_key_recent(key=key, name=name)
        if named is None:
            raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
        model = named
    route = route_for(model)
    _require_task(route, task)
    return route


async def _default_model(key: ApiKey) -> ServedModel:
    """The model a tokenizer job without `model` means: the one generate model the key may use
    (llama-server's /tokenize names none, as it serves one model)."""
    candidates = [m for m in await served_models_for_key_recent(key=key) if m.task == ServedModel.Task.GENERATE]
    if len(candidates) != 1:
        raise InvalidRequest(
            f"'model' is required: this key may use {len(candidates)} generation models, not exactly one.",
            param="model",
            code="missing_required_parameter",
        )
    return candidates[0]


_ENDPOINT_OF_TASK = {
    "generate": "generation",
    "embed": "embeddings",
    "tokenize": "tokenize",
    "detokenize": "detokenize",
}


def _require_task(route: Route, task: Task) -> None:
    model = route.model
    if task in ("generate", "embed") and model.task != task:
        raise UnsupportedParameter(
            f"Model `{model.name}` is served for {_ENDPOINT_OF_TASK[model.task]} (its task is {model.task!r}), "
            f"so it does not serve {_ENDPOINT_OF_TASK[task]}.",
            param="model",
            code="model_task_mismatch",
        )
    feature = {"embed": "embeddings", "tokenize": "tokenize", "detokenize": "tokenize"}.get(task)
    if feature is not None and feature not in route.capabilities:
        raise UnsupportedParameter(
            f"The {route.engine} engine serving model `{model.name}` does not support {feature}.", param="model"
        )


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
