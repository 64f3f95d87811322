"""Any OpenAI-compatible server that someone else runs, as an engine.

The HTTP work (requests, server-sent events, error mapping) is engines.openai_client's;
this module only reads the engine options and checks the server at load.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncGenerator
from typing import Any

from .base import Chunk, Engine, GenerationRequest, ModelSpec
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError
from .openai_client import DEFAULT_TIMEOUT_S, OpenAIProxy

logger = logging.getLogger(__name__)

# An api_key option of this form names the environment variable holding the key (LiteLLM's
# spelling), so the key stays out of the database and lives only where the engine runs. Only
# names ending in _API_KEY: whoever may edit a model must not send the platform's own secrets
# (SECRET_KEY, DATABASE_URL, METRICS_TOKEN...) to an upstream of their choosing.
UPSTREAM_KEY_FROM_ENV = "os.environ/"
_KEY_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*_API_KEY")


def key_variable(option: str | None) -> str | None:
    """The environment variable an api_key option names, None for a key given as is; ValueError
    for a reference to a variable that may not be read."""
    if not option or not option.startswith(UPSTREAM_KEY_FROM_ENV):
        return None
    variable = option.removeprefix(UPSTREAM_KEY_FROM_ENV)
    if not _KEY_VARIABLE.fullmatch(variable):
        raise ValueError(
            f"{UPSTREAM_KEY_FROM_ENV}{variable}: only an environment variable whose name ends in _API_KEY "
            f"may hold the key, e.g. {UPSTREAM_KEY_FROM_ENV}OPENAI_API_KEY"
        )
    return variable


class UpstreamEngine(Engine):
    """Someone else's OpenAI-compatible server as an engine.

    Options: base_url (required, e.g. http://127.0.0.1:8080/v1), api_key (or os.environ/NAME), model (the
    upstream's name for it; default spec.source or spec.name), timeout (seconds the stream
    may stay silent), stream (false for servers that report usage only unstreamed, such as
    llama-cpp-python's: counts then arrive, at the cost of all text coming at once).
    """

    name = "upstream"
    # Only what OpenAIProxy.body forwards: declaring n or logprobs here would be a lie.
    capabilities = CAPABILITIES["upstream"]

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._proxy: OpenAIProxy | None = None

    @property
    def loaded(self) -> bool:
        return self._proxy is not None

    def load(self) -> None:
        options = self.spec.options
        base_url = options.get("base_url")
        if not base_url:
            raise EngineUnavailableError(
                f"model {self.spec.name}: the upstream engine needs options.base_url, e.g. http://127.0.0.1:8080/v1"
            )
        proxy = OpenAIProxy(
            base_url,
            model=options.get("model") or self.spec.source or self.spec.name,
            api_key=self._api_key(options.get("api_key")),
            timeout_s=float(options.get("timeout", DEFAULT_TIMEOUT_S)),
            context_length=self.spec.context_length,
            stream=bool(options.get("stream", True)),
        )
        models = proxy.check()
        if models and proxy.model not in models:
            # Single-model servers (llama.cpp's) answer whatever name they are sent, so a
            # missing name is worth a warning, not a refusal.
            logger.warning("upstream %s does not list model %r (it lists %s)", proxy.base_url, proxy.model, models)
        self._proxy = proxy

    def _api_key(self, option: str | None) -> str | None:
        """The key itself, or read from the environment variable that `os.environ/NAME` names."""
        try:
            variable = key_variable(option)
        except ValueError as exc:
            raise EngineUnavailableError(f"model {self.spec.name}: options.api_key {exc}") from exc
        if variable is None:
            return option or None
        key = os.environ.get(variable)
        if not key:
            raise EngineUnavailableError(
                f"model {self.spec.name}: options.api_key reads the environment variable {variable!r}, "
                f"which is not set (or empty) on this host"
            )
        return key

    def unload(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.close()  # its connections; streams under way finish first

    async def _generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        proxy = self._proxy
        if proxy is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        async for chunk in proxy.stream(request):
            yield chunk

    async def _one_shot(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Embeddings go to the upstream's /embeddings; OpenAI's API has no tokenizer endpoint."""
        proxy = self._proxy
        if request.task != "embed" or proxy is None:
            async for chunk in super()._one_shot(request):
                yield chunk
            return
        async for chunk in proxy.embed(request):
            yield chunk

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["upstream"] = self._proxy.base_url if self._proxy else self.spec.options.get("base_url")
        return state
