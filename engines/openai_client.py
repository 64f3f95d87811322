"""A streaming client for any OpenAI-compatible server, speaking in the engine contract's terms.

`OpenAIProxy` turns a GenerationRequest into one streamed POST to /chat/completions or
/completions, the server-sent events back into Chunks, and error answers into the typed
engine errors. The upstream engine points it at a server someone else runs; the child-server
engines (engines.child_server) point it at a child they run.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .base import Chunk, FinishReason, GenerationRequest, OutputFormat, ToolCallDelta, completion_budget
from .errors import (
    ContextOverflowError,
    EngineCrashedError,
    EngineError,
    EngineUnavailableError,
    UnsupportedParameterError,
)
from .inputs import empty_input, text_messages

DEFAULT_TIMEOUT_S = 600.0
# A server that does not accept a connection within this is down, whatever `timeout` says
# about how long a slow prefill may keep the stream silent.
CONNECT_TIMEOUT_S = 10.0

# OpenAI says `context_length_exceeded`; vLLM, llama.cpp and others only say it in words.
_CONTEXT_WORDS = re.compile(r"context[ _](length|window)|maximum context|prompt is too long", re.IGNORECASE)

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "abort": "cancelled",
}

# Connections kept open to the upstream per event loop, for the next requests; beyond them a
# burst opens more (never queues for one), which close after their request.
KEEPALIVE_CONNECTIONS = 64
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=KEEPALIVE_CONNECTIONS)
# What a request that found its kept-alive connection closed by the server (between our check
# and our write) sees; nothing reached the server's application, so it is sent once more.
# How long the end of a stream after its [DONE] may take before the connection is given up instead.
DRAIN_TIMEOUT_S = 1.0
_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass
class _LoopClient:
    """One event loop's client, and how many of this proxy's streams use it now."""

    client: httpx.AsyncClient
    streams: int = 0


class UpstreamUnreachableError(EngineUnavailableError):
    """The upstream gave no answer at all (refused or dropped the connection first).

    Nothing was streamed, so sending the request again is safe.
    """


class OpenAIProxy:
    """Streams requests to one OpenAI-compatible server and maps its answers to Chunks."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context_length: int | None = None,
        stream: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.context_length = context_length
        self.stream_responses = stream
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        # Environment proxies (HTTP_PROXY) make sense for a remote upstream, never for a local one.
        self._trust_env = httpx.URL(self.base_url).host not in _LOOPBACK_HOSTS
        # Building the CA bundle costs ~40 ms; every client shares this one.
        self._ssl: ssl.SSLContext = httpx.create_ssl_context(trust_env=self._trust_env)
        # One client (a connection pool) per event loop: its connections belong to the loop that
        # opened them, and one engine serves several loops (the web process, a worker's, tests').
        # A client per request cost a new TCP connection and a client's set-up every time.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close every loop's client, each on its own loop; one that streams closes after its last stream.

        Callable from any thread (an engine unloads on a worker thread). A later request opens a new one.
        """
        with self._clients_lock:
            self._closed = True
            idle = [(loop, entry) for loop, entry in self._clients.items() if entry.streams == 0]
            for loop, _ in idle:
                del self._clients[loop]
        for loop, entry in idle:
            if not loop.is_closed():
                try:
                    asyncio.run_coroutine_threadsafe(entry.client.aclose(), loop)
                except RuntimeError:  # the loop closed meanwhile: its sockets went with it
                    pass

    def _client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get(loop)
            if entry is None:
                client = httpx.AsyncClient(
                    timeout=self._timeout, verify=self._ssl, trust_env=self._trust_env, limits=_LIMITS
                )
                entry = self._clients[loop] = _LoopClient(client)
            entry.streams += 1
            return entry

    async def _release(self, entry: _LoopClient) -> None:
        with self._clients_lock:
            entry.streams -= 1
            last = self._closed and entry.streams == 0
            if last:
                self._clients.pop(asyncio.get_running_loop(), None)
        if last:
            await entry.client.aclose()

    def check(self) -> list[str]:
        """Blocking: ask GET /models; return the model ids or raise EngineUnavailableError."""
        try:
            with httpx.Client(timeout=self._timeout, verify=self._ssl, trust_env=self._trust_env) as client:
                response = client.get(f"{self.base_url}/models", headers=self._headers)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"upstream {self.base_url} unreachable: {_describe(exc)}") from exc
        if response.status_code != 200:
            raise _error_from_response(response.status_code, response.content, self.base_url, "/models")
        try:
            return [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]
        except (ValueError, AttributeError):
            raise EngineUnavailableError(
                f"upstream {self.base_url} answered GET /models with something that is not an OpenAI model list"
            ) from None

    def body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body that carry `request` upstream."""
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if self.stream_responses:
            # Usage in the stream is the only way to get the upstream tokenizer's counts
            # without a second request; servers that ignore it leave our counts None.
            body.update(stream=True, stream_options={"include_usage": True})
        if sampling.max_tokens is not None:
            body["max_tokens"] = sampling.max_tokens
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        # Zero is every server's default, so leaving them out means the same and spares
        # strict upstreams a parameter they might refuse.
        if sampling.presence_penalty:
            body["presence_penalty"] = sampling.presence_penalty
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        if request.output_format is not None:
            body["response_format"] = response_format(request.output_format)
        if request.messages is not None:
            # Null content is valid OpenAI, but servers whose templates concatenate it fail on it.
            body["messages"] = text_messages(request.messages)
            body.update(tool_fields(request))
            return "/chat/completions", body
        body["prompt"] = request.prompt
        return "/completions", body

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Yield the upstream's deltas, then a final chunk; closing this closes the HTTP response."""
        self._check_budget(request)
        if request.prompt == "":
            # The upstream's tokenizer is unknown here, and servers differ: llama-cpp-python's
            # breaks off its stream on the empty batch, vLLM refuses. Refuse it the same way everywhere.
            raise empty_input(request, "The upstream server cannot be relied on to generate from nothing.")
        path, body = self.body(request)
        final: Chunk | None = None
        responded = False
        entry = self._client()
        try:
            for attempt in (1, 2):
                try:
                    async with entry.client.stream(
                        "POST", self.base_url + path, json=body, headers=self._headers
                    ) as response:
                        responded = True
                        if response.status_code >= 400:
                            await response.aread()
                            raise _error_from_response(response.status_code, response.content, self.base_url, path)
                        if self.stream_responses:
                            events = _sse_events(response.aiter_lines())
                        else:
                            events = _single_event(response)
                        async for event in events:
                            if event == "[DONE]":
                                # Read to the end of the body, which is at most the stream's last
                                # bytes: only a response read to its end leaves its connection
                                # open for the next request.
                                await _drain(events)
                                break
                            delta, final = self._parse_event(event, final)
                            if delta.text or delta.tool_calls:
                                yield delta
                    break
                except _STALE_CONNECTION_ERRORS:
                    if responded or attempt == 2:
                        raise
        except EngineError:
            raise
        except httpx.TimeoutException as exc:
            raise EngineUnavailableError(f"upstream {self.base_url} timed out: {_describe(exc)}") from exc
        except httpx.TransportError as exc:
            if not responded:  # refused, or dropped before a single byte of answer
                raise UpstreamUnreachableError(f"upstream {self.base_url} unreachable: {_describe(exc)}") from exc
            raise EngineCrashedError(f"upstream {self.base_url} broke off the response: {_describe(exc)}") from exc
        except httpx.HTTPError as exc:
            raise EngineCrashedError(f"upstream {self.base_url} answered badly: {_describe(exc)}") from exc
        finally:
            await self._release(entry)
        if final is None or final.finish_reason is None:
            raise EngineCrashedError(f"upstream {self.base_url} ended the stream without a finish reason")
        yield final

    def _check_budget(self, request: GenerationRequest) -> None:
        # Some servers (llama-cpp-python's among them) silently shrink a max_tokens that cannot
        # fit; the platform promises an error instead, as its other engines give.
        if self.context_length is not None and request.sampling.max_tokens is not None:
            completion_budget(prompt_tokens=None, max_tokens=request.sampling.max_tokens, n_ctx=self.context_length)

    def _parse_event(self, data: str, final: Chunk | None) -> tuple[Chunk, Chunk | None]:
        """The text and tool-call pieces of one event, and the final chunk updated with its
        finish reason or usage."""
        try:
            event = json.loads(data)
        except ValueError:
            raise EngineCrashedError(
                f"upstream {self.base_url} sent an event that is not JSON: {data[:200]!r}"
            ) from None
        if not isinstance(event, dict):
            raise EngineCrashedError(f"upstream {self.base_url} sent an unexpected event: {data[:200]!r}")
        if event.get("error") or event.get("object") == "error":
            # Headers were already sent with 200, so the upstream reports the failure in-band.
            raise _error_from_body(event, 500, self.base_url)
        piece = Chunk()
        choices = event.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is not None:
            delta = choice.get("delta")
            # A non-streamed answer has its whole message where a stream has deltas.
            message = choice.get("message") if isinstance(choice.get("message"), dict) else delta
            if isinstance(message, dict):
                piece.text = message.get("content") or ""
                piece.tool_calls = _tool_call_deltas(message.get("tool_calls"), whole="message" in choice)
            else:
                piece.text = choice.get("text") or ""
            reason = choice.get("finish_reason")
            if reason:
                final = final or Chunk()
                final.finish_reason = _FINISH_REASONS.get(reason, "stop")
                stop = choice.get("stop_reason")  # vLLM names the stop string that matched
                if isinstance(stop, str) and stop:
                    final.stop_sequence = stop
        usage = event.get("usage")
        if isinstance(usage, dict):
            final = final or Chunk()
            final.prompt_tokens = _count(usage.get("prompt_tokens"))
            final.completion_tokens = _count(usage.get("completion_tokens"))
        return piece, final

    async def embed(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """The upstream's embeddings of `request.inputs`: one chunk per input, then the usage."""
        body: dict[str, Any] = {"model": self.model, "input": list(request.inputs)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions  # the server shortens, or refuses, as it can
        answer = await self.post_json("/embeddings", body)
        items = answer.get("data")
        if not isinstance(items, list) or len(items) != len(request.inputs):
            raise EngineCrashedError(f"upstream {self.base_url} answered /embeddings without one vector per input")
        for position, item in enumerate(items):
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(vector, list):
                raise EngineCrashedError(f"upstream {self.base_url} sent an embedding that is not a list of floats")
            yield Chunk(embedding=tuple(float(x) for x in vector), index=item.get("index", position))
        usage = answer.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        yield Chunk(finish_reason="stop", prompt_tokens=_count(usage.get("prompt_tokens")), completion_tokens=0)

    async def tokenize(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Tokenize or detokenize on the server's own /tokenize and /detokenize (vLLM's; not OpenAI's)."""
        if request.task == "detokenize":
            answer = await self.post_json(
                "/detokenize", {"model": self.model, "tokens": list(request.token_ids)}, root=True
            )
            text = answer.get("prompt")
            yield Chunk(
                text=text if isinstance(text, str) else "", finish_reason="stop", prompt_tokens=0, completion_tokens=0
            )
            return
        body: dict[str, Any] = {"model": self.model}
        if request.messages is not None:
            body.update(
                messages=text_messages(request.messages),
                add_generation_prompt=request.add_generation_prompt,
                **tool_fields(request),
            )
        else:
            body.update(prompt=request.prompt, add_special_tokens=request.add_special)
        answer = await self.post_json("/tokenize", body, root=True)
        tokens = answer.get("tokens")
        if not isinstance(tokens, list):
            raise EngineCrashedError(f"upstream {self.base_url} answered /tokenize without a token list")
        # No model ran: like the other engines' tokenizer jobs, it counts no tokens.
        yield Chunk(
            token_ids=tuple(int(token) for token in tokens), finish_reason="stop", prompt_tokens=0, completion_tokens=0
        )

    async def post_json(self, path: str, body: dict[str, Any], *, root: bool = False) -> dict[str, Any]:
        """POST `body` to `path` (under the server's root rather than base_url when `root`) and
        return the JSON answer; errors are typed as generation's are."""
        base = self.base_url.removesuffix("/v1") if root else self.base_url
        entry = self._client()
        try:
            response = await entry.client.post(base + path, json=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise EngineUnavailableError(f"upstream {self.base_url} timed out: {_describe(exc)}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnreachableError(f"upstream {self.base_url} unreachable: {_describe(exc)}") from exc
        finally:
            await self._release(entry)
        if response.status_code >= 400:
            raise _error_from_response(response.status_code, response.content, self.base_url, path)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise EngineCrashedError(f"upstream {self.base_url} answered {path} with something that is not JSON")
        return answer


def response_format(output: OutputFormat) -> dict[str, Any]:
    """OpenAI's `response_format` for an output format (a GBNF grammar has none: engines refuse it)."""
    if output.kind == "json_object":
        return {"type": "json_object"}
    if output.kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": output.name or "output", "schema": output.schema, "strict": True},
        }
    raise UnsupportedParameterError("A GBNF grammar cannot be sent to an OpenAI-compatible server.", param="grammar")


def tool_fields(request: GenerationRequest) -> dict[str, Any]:
    """The request's tools, tool choice and parallel-call switch as OpenAI's chat fields."""
    if not request.tools:
        return {}
    fields: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            }
            for tool in request.tools
        ],
        "tool_choice": (
            {"type": "function", "function": {"name": request.forced_tool}}
            if request.tool_choice == "function"
            else request.tool_choice
        ),
    }
    if not request.parallel_tool_calls:
        fields["parallel_tool_calls"] = False
    return fields


def _tool_call_deltas(calls: Any, *, whole: bool) -> tuple[ToolCallDelta, ...]:
    """OpenAI's tool calls (deltas of a stream, or a whole message's calls) as ToolCallDeltas."""
    if not isinstance(calls, list):
        return ()
    deltas = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        deltas.append(
            ToolCallDelta(
                call=position if whole else int(call.get("index", position)),
                id=call.get("id"),
                name=function.get("name"),
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(deltas)


async def _sse_events(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The data of each server-sent event; comments (pings) and other fields are skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


async def _drain(events: AsyncIterator[str]) -> None:
    """Consume what is left of a stream, for at most DRAIN_TIMEOUT_S (a server that holds it open loses its connection)."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in events:
                pass
    except TimeoutError:
        pass


async def _single_event(response: httpx.Response) -> AsyncGenerator[str, None]:
    """A non-streamed answer read as if it were a stream of one event."""
    yield (await response.aread()).decode("utf-8", errors="replace")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_from_response(status: int, content: bytes, base_url: str, path: str) -> EngineError:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": content.decode("utf-8", errors="replace")[:500] or f"HTTP {status}"}
    return _error_from_body(body, status, base_url, path)


def _error_from_body(body: dict[str, Any], status: int, base_url: str, path: str = "") -> EngineError:
    """Map an upstream error answer onto the platform's typed errors."""
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    message = fields.get("message") or (error if isinstance(error, str) else None) or fields.get("detail")
    message = str(message or f"HTTP {status}")
    code = fields.get("code")
    param = fields.get("param") if isinstance(fields.get("param"), str) else None
    status = _status_of(code, status)
    if status in (400, 413, 422) and (code == "context_length_exceeded" or _CONTEXT_WORDS.search(message)):
        return ContextOverflowError(message, param=param or "messages")
    if status in (401, 403):
        return EngineUnavailableError(f"upstream {base_url} refused our API key ({status}): {message}")
    if status == 404:
        return EngineUnavailableError(
            f"upstream {base_url} has no {path or 'such endpoint'} or model ({status}): {message}"
        )
    if status in (408, 429):
        return EngineUnavailableError(f"upstream {base_url} is busy ({status}): {message}")
    if 400 <= status < 500:
        return UnsupportedParameterError(message, param=param)
    return EngineCrashedError(f"upstream {base_url} failed ({status}): {message}")


def _status_of(code: Any, status: int) -> int:
    # In-band stream errors come with 200 headers; some servers put the real status in `code`.
    return code if isinstance(code, int) and 400 <= code < 600 else status
