"""The engine whose model is served by an OpenAI-compatible child process it runs.

Engines such as vLLM only say which command to run; keeping the child alive is
`process_supervisor`'s, talking to it is `openai_client`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from .base import Chunk, Engine, GenerationRequest, ModelSpec
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError
from .openai_client import DEFAULT_TIMEOUT_S, OpenAIProxy, UpstreamUnreachableError
from .process_supervisor import HEALTH_POLL_S, RestartPolicy, ServerSupervisor, render


class SupervisedServerEngine(Engine):
    """An OpenAI-compatible server run as a supervised child and reached through OpenAIProxy.

    Options: command (list with {port} {host} {source} {model}), health_url, base_url, env,
    port (0 picks a free one), model, timeout, max_restarts, restart_window_s,
    restart_backoff_s, startup_timeout_s, shutdown_grace_s, ready_wait_s.
    """

    name = "supervised"
    capabilities = CAPABILITIES["upstream"]  # what the proxy forwards
    # Whether the child serves vLLM's /tokenize and /detokenize beside its OpenAI routes.
    tokenizer_endpoints = False
    health_url_template = "http://{host}:{port}/v1/models"
    base_url_template = "http://{host}:{port}/v1"
    default_startup_timeout_s = 120.0

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.supervisor: ServerSupervisor | None = None
        self._proxy: OpenAIProxy | None = None
        self.ready_wait_s = float(spec.options.get("ready_wait_s", 60.0))

    def command_template(self) -> list[str]:
        """The child's command line, with placeholders; subclasses build it from options."""
        command = self.spec.options.get("command")
        if not command or isinstance(command, str):
            raise EngineUnavailableError(f"model {self.spec.name}: options.command must be a list of arguments")
        return [str(arg) for arg in command]

    def server_env(self) -> dict[str, str]:
        """Variables added to this process's environment for the child."""
        return {str(k): str(v) for k, v in (self.spec.options.get("env") or {}).items()}

    def served_model(self) -> str:
        """The model name the child answers to."""
        return self.spec.options.get("model") or self.spec.name

    def build_supervisor(self) -> ServerSupervisor:
        """The supervisor for this spec, not yet started."""
        options = self.spec.options
        policy = RestartPolicy(
            max_restarts=int(options.get("max_restarts", RestartPolicy.max_restarts)),
            window_s=float(options.get("restart_window_s", RestartPolicy.window_s)),
            backoff_s=float(options.get("restart_backoff_s", RestartPolicy.backoff_s)),
        )
        return ServerSupervisor(
            self.spec.name,
            self.command_template(),
            health_url=options.get("health_url") or self.health_url_template,
            values={"source": self.spec.source, "model": self.served_model()},
            env=self.server_env(),
            port=int(options.get("port") or 0),
            policy=policy,
            startup_timeout_s=float(options.get("startup_timeout_s", self.default_startup_timeout_s)),
            shutdown_grace_s=float(options.get("shutdown_grace_s", 10.0)),
        )

    @property
    def loaded(self) -> bool:
        # False while the child restarts, so readiness pages tell the truth meanwhile.
        return self.supervisor is not None and self.supervisor.ready

    def load(self) -> None:
        self.unload()  # never leave an earlier child running unsupervised
        supervisor = self.build_supervisor()
        supervisor.start()
        self._proxy = OpenAIProxy(
            render(self.spec.options.get("base_url") or self.base_url_template, supervisor.values),
            model=self.served_model(),
            api_key=self.spec.options.get("api_key") or None,
            timeout_s=float(self.spec.options.get("timeout", DEFAULT_TIMEOUT_S)),
        )
        self.supervisor = supervisor

    def unload(self) -> None:
        supervisor, proxy = self.supervisor, self._proxy
        self.supervisor, self._proxy = None, None
        if proxy is not None:
            proxy.close()  # its kept-alive connections to the child
        if supervisor is not None:
            supervisor.stop()

    async def _generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        supervisor, proxy = self.supervisor, self._proxy
        if supervisor is None or proxy is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        await self._wait_ready(supervisor)
        launch = supervisor.launches
        try:
            async for chunk in proxy.stream(request):
                yield chunk
            return
        except UpstreamUnreachableError:
            # Refused before anything was sent: if the child just died, wait for its
            # replacement and send the request once more; a live child that refuses is an error.
            if not await self._relaunched_since(supervisor, launch):
                raise
        await self._wait_ready(supervisor)
        async for chunk in proxy.stream(request):
            yield chunk

    async def _one_shot(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Embeddings from the child's /embeddings, and its tokenizer where `tokenizer_endpoints`."""
        supervisor, proxy = self.supervisor, self._proxy
        wanted = request.task == "embed" or self.tokenizer_endpoints
        if supervisor is None or proxy is None or not wanted:
            async for chunk in super()._one_shot(request):
                yield chunk
            return
        await self._wait_ready(supervisor)
        results = proxy.embed(request) if request.task == "embed" else proxy.tokenize(request)
        async for chunk in results:
            yield chunk

    async def _relaunched_since(self, supervisor: ServerSupervisor, launch: int) -> bool:
        """Whether the child is being (or has been) replaced since launch number `launch`."""
        # The watcher notices a death within milliseconds; a second is plenty.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not supervisor.ready or supervisor.launches != launch:
                return True
            await asyncio.sleep(HEALTH_POLL_S / 4)
        return False

    async def _wait_ready(self, supervisor: ServerSupervisor) -> None:
        # Polling, not a thread per waiter: many requests may wait through one restart.
        deadline = time.monotonic() + self.ready_wait_s
        while not supervisor.ready:
            if supervisor.status in ("failed", "stopped"):
                detail = f": {supervisor.failure}" if supervisor.failure else ""
                raise EngineUnavailableError(f"model {self.spec.name}: its server is {supervisor.status}{detail}")
            if time.monotonic() > deadline:
                raise EngineUnavailableError(
                    f"model {self.spec.name}: its server is {supervisor.status}, not ready after {self.ready_wait_s:g}s"
                )
            await asyncio.sleep(HEALTH_POLL_S / 2)

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["server"] = self.supervisor.state() if self.supervisor else {"status": "stopped"}
        return state
