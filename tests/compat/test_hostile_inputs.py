"""Hostile requests against the platform started as the README says, with the real model.

Each case is one item of issue 9 (F1-F13, L1, L2), sent the way curl sends it: httpx for plain
requests, a raw socket where a client library would tidy the request up (`--path-as-is` paths,
a chunked body, oversized header and request lines, a malformed Host header, raw JSON escapes).
Every refusal must be a 4xx in OpenAI's error shape, no request may get a 5xx or no answer,
and a normal chat completion on the real model must still succeed after each case and at the end.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import sqlite3
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from websockets.sync.client import connect

from .live_server import start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]

TIMEOUT = 120
ERROR_KEYS = {"message", "type", "param", "code"}
DEEP = 10_000
# Written as JSON escapes, so the body carries a lone surrogate exactly as a client's JSON does.
SURROGATE = "\\ud800"
HELLO = [{"role": "user", "content": "Say hello."}]


@dataclass
class Answer:
    """One HTTP answer; status None means the server sent no HTTP response at all."""

    status: int | None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    failure: str = ""  # why there was no response

    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        if self.status is None:
            return f"no HTTP response ({self.failure})"
        return f"{self.status} {self.headers.get('content-type', '')} {self.body[:300]!r}"


# Sending


def auth(live) -> dict:
    return {"Authorization": f"Bearer {live.api_key}"}


def send(
    live, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None, key: bool = True
) -> Answer:
    """A request through httpx: what the openai SDK and most clients send."""
    all_headers = {**(auth(live) if key else {}), **(headers or {})}
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    try:
        response = httpx.request(method, live.base_url + path, content=body, headers=all_headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return Answer(None, failure=repr(exc))
    return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


def post_json(live, path: str, text: str, **kwargs) -> Answer:
    """POST a JSON text as its UTF-8 bytes, escapes and all, untouched by any encoder."""
    return send(live, "POST", path, body=text.encode(), **kwargs)


def send_raw(live, head: str | bytes, body: bytes = b"") -> Answer:
    """Write the request bytes to a socket as they are and parse whatever comes back."""
    address = urlsplit(live.base_url)
    if isinstance(head, str):
        head = head.encode("latin-1")
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(head + body)
        except OSError:
            pass  # the server may answer (e.g. 413) and close before reading everything
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, failure=repr(exc))
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)


def raw_head(live, method: str, path: str, headers: dict | None = None, host: str | None = None) -> str:
    """A request head as curl writes it, with Connection: close so the answer ends the stream."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host or urlsplit(live.base_url).netloc}",
        "User-Agent: curl/8.5.0",
        "Accept: */*",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def ws_connect(live, path: str = "/ws/v1/chat/completions"):
    url = live.base_url.replace("http://", "ws://", 1) + path
    return connect(url, additional_headers=auth(live), open_timeout=TIMEOUT, close_timeout=5, max_size=None)


def ws_frames_until_done(sock) -> list:
    frames = []
    while (text := sock.recv(timeout=TIMEOUT)) != "[DONE]":
        frames.append(json.loads(text))
    return frames


def chat_body(**overrides) -> dict:
    return {"model": "smollm2", "messages": HELLO, "max_tokens": 2, "temperature": 0, **overrides}


# Checking


def assert_openai_error(answer: Answer, statuses: set[int] | None = None) -> dict:
    """A 4xx (one of `statuses` when given) whose body is exactly {"error": {message,type,param,code}}."""
    assert answer.status is not None, str(answer)
    assert 400 <= answer.status < 500, str(answer)
    if statuses is not None:
        assert answer.status in statuses, str(answer)
    assert answer.headers.get("content-type", "").startswith("application/json"), str(answer)
    body = answer.json()
    assert isinstance(body, dict) and set(body) == {"error"}, str(answer)
    assert set(body["error"]) == ERROR_KEYS, str(answer)
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], str(answer)
    assert isinstance(body["error"]["type"], str) and body["error"]["type"], str(answer)
    return body["error"]


def assert_chat_answer(answer: Answer) -> dict:
    """A 200 chat completion with text the model produced."""
    assert answer.status == 200, str(answer)
    body = answer.json()
    assert body["object"] == "chat.completion", body
    assert isinstance(body["choices"][0]["message"]["content"], str), body
    assert body["usage"]["completion_tokens"] >= 1, body
    return body


def assert_serves_normally(live) -> None:
    """The server process lives and a normal chat completion on the real model succeeds."""
    assert live.process.poll() is None, live.log()[-4000:]
    assert_chat_answer(post_json(live, "/v1/chat/completions", json.dumps(chat_body())))


def assert_ws_serves_normally(sock) -> None:
    sock.send(json.dumps({"type": "request", "body": chat_body()}))
    frames = ws_frames_until_done(sock)
    assert frames and not any("error" in f for f in frames), frames
    assert any(f["choices"] and f["choices"][0]["delta"].get("content") for f in frames if "choices" in f), frames


def nested(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


# The cases: one row per request, named after the issue item it reproduces


def deep_body(path: str):
    """F1: a body that is nothing but 10,000 nested arrays."""

    def case(live):
        assert_openai_error(post_json(live, path, nested()), {400})

    return case


def deep_messages(live):
    """F1: a well-formed body whose messages are nested 10,000 deep."""
    assert_openai_error(
        post_json(live, "/v1/chat/completions", '{"model": "smollm2", "messages": %s}' % nested()), {400}
    )


NULL_CONTENT_HISTORY = [
    {"role": "user", "content": "My name is Ann."},
    {"role": "assistant", "content": None},
    {"role": "user", "content": "What is my name?"},
]


def null_assistant_content_http(live):
    """F2: valid OpenAI input, sent by every tool-calling client: it must succeed."""
    assert_chat_answer(post_json(live, "/v1/chat/completions", json.dumps(chat_body(messages=NULL_CONTENT_HISTORY))))


def null_assistant_content_websocket(live):
    """F2 over the WebSocket: a normal stream ending in [DONE], no error frame."""
    with ws_connect(live) as sock:
        sock.send(json.dumps({"type": "request", "body": chat_body(messages=NULL_CONTENT_HISTORY)}))
        frames = ws_frames_until_done(sock)
    assert frames and not any("error" in f for f in frames), frames
    assert any(f.get("choices") and f["choices"][0]["delta"].get("content") for f in frames), frames


def raw_body(path: str, body: str | bytes, statuses: set[int]):
    """A body sent byte for byte as written here (JSON escapes stay escapes)."""

    def case(live):
        data = body.encode() if isinstance(body, str) else body
        assert_openai_error(send(live, "POST", path, body=data), statuses)

    return case


CHAT_WITH = '{"model": "smollm2", "max_tokens": 2, "messages": [{"role": "%s", "content": "%s"}]%s}'
PROMPT_WITH = '{"model": "smollm2", "max_tokens": 2, "prompt": "%s"}'


def empty_prompt(prompt):
    """F5: OpenAI itself completes an empty prompt, so a real completion is as good as a refusal."""

    def case(live):
        answer = post_json(live, "/v1/completions", json.dumps({"model": "smollm2", "prompt": prompt, "max_tokens": 2}))
        if answer.status == 200:
            assert answer.json()["object"] == "text_completion", str(answer)
            assert answer.json()["usage"]["completion_tokens"] >= 1, str(answer)
        else:
            assert_openai_error(answer, {400})

    return case


def body_over_the_limit(live):
    """F6: 5 MiB, over the 4 MiB default of MAX_REQUEST_BODY_BYTES."""
    content = "a" * (5 * 1024 * 1024)
    body = json.dumps(chat_body(messages=[{"role": "user", "content": content}])).encode()
    head = raw_head(
        live,
        "POST",
        "/v1/chat/completions",
        {**auth(live), "Content-Type": "application/json", "Content-Length": len(body)},
    )
    assert_openai_error(send_raw(live, head, body), {413})


def request(method: str, path: str, statuses: set[int], body: bytes | None = None):
    def case(live):
        assert_openai_error(send(live, method, path, body=body), statuses)

    return case


def sdk_moderations(live):
    """F7: the openai SDK sees an unknown endpoint as NotFoundError, not PermissionDeniedError."""
    sdk = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.api_key, max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.NotFoundError):
        sdk.moderations.create(model="smollm2", input="hi")


def deep_websocket_frame(frame: str):
    """F8: an invalid_message error frame, then the same socket serves a normal request."""

    def case(live):
        with ws_connect(live) as sock:
            sock.send(frame)
            error = json.loads(sock.recv(timeout=TIMEOUT))
            assert set(error) == {"error"} and set(error["error"]) == ERROR_KEYS, error
            assert error["error"]["code"] == "invalid_message", error
            assert_ws_serves_normally(sock)

    return case


def long_bearer_key(live):
    """F9: a 20 KB Authorization header gets an answer: 431, or 401 for the unknown key."""
    head = raw_head(live, "GET", "/v1/models", {"Authorization": "Bearer ipk-" + "k" * (20 * 1024)})
    assert_openai_error(send_raw(live, head), {431, 401})


def long_model_path(live):
    """F9: a 100 KB request line gets an answer: 414, or 404 for the unknown model."""
    head = raw_head(live, "GET", "/v1/models/" + "m" * (100 * 1024), auth(live))
    assert_openai_error(send_raw(live, head), {414, 404})


def post_admin_without_slash(live):
    """F10: no 5xx; a redirect to /admin/ or a 4xx in OpenAI's shape."""
    answer = send_raw(live, raw_head(live, "POST", "/admin", {"Content-Length": 0}))
    assert answer.status is not None and answer.status < 500, str(answer)
    if answer.status >= 400:
        assert_openai_error(answer)


def static_traversal(path: str):
    """F11: curl --path-as-is; never the file, never a 5xx."""

    def case(live):
        answer = send_raw(live, raw_head(live, "GET", path))
        assert b"SECRET_KEY" not in answer.body and b"INSTALLED_APPS" not in answer.body, str(answer)
        assert_openai_error(answer, {400, 404})

    return case


def chunked_body(live):
    """F12: a chunked body is read (200 with a real answer), or refused with a 411 that says why."""
    body = json.dumps(chat_body()).encode()
    half = len(body) // 2
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])) + b"0\r\n\r\n"
    head = raw_head(
        live,
        "POST",
        "/v1/chat/completions",
        {**auth(live), "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    answer = send_raw(live, head, chunked)
    if answer.status == 411:
        assert "Content-Length" in assert_openai_error(answer)["message"], str(answer)
    else:
        assert_chat_answer(answer)


def admin_css(live):
    """F13: the admin's stylesheet is served."""
    css = send(live, "GET", "/static/admin/css/base.css", key=False)
    assert css.status == 200 and css.headers["content-type"].startswith("text/css"), str(css)


def docs_assets(live):
    """F13: every asset the Swagger UI page at /v1/docs loads is served."""
    docs = send(live, "GET", "/v1/docs", key=False)
    assert docs.status == 200, str(docs)
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', docs.body.decode())
    assert assets, docs.body[:2000]
    for asset in assets:
        answer = send(live, "GET", asset, key=False)
        assert answer.status == 200 and answer.body, f"{asset}: {answer}"


# Secrets sent by the L1 cases and markers of their refused requests, checked once the log is complete.
L1_SECRETS: list[str] = []
L1_MARKERS: list[str] = []
# "2026-11-30 10:28:19,123 WARNING django.request: " before a formatted log message.
LOG_PREFIX = re.compile(r"^\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def refused_key(where: str):
    """L1: a fresh-looking key in the query string or a wrong Bearer key is refused with a 401."""

    def case(live):
        secret, marker = f"ipk-{secrets.token_hex(16)}", f"probe-{secrets.token_hex(6)}"
        L1_SECRETS.append(secret)
        L1_MARKERS.append(marker)
        if where == "query":
            answer = send(live, "GET", f"/v1/models/{marker}?api_key={secret}", key=False)
        else:
            answer = send(live, "GET", f"/v1/models/{marker}", headers={"Authorization": f"Bearer {secret}"}, key=False)
        assert_openai_error(answer, {401})

    return case


def bad_host_header(live):
    """L2: `Host: a b` gets a small 400 JSON body, not Django's debug page."""
    answer = send_raw(live, raw_head(live, "GET", "/v1/models", auth(live), host="a b"))
    assert answer.status is not None, str(answer)
    assert b"Traceback" not in answer.body and b"DEBUG" not in answer.body, str(answer)
    assert len(answer.body) < 2048, str(answer)
    assert_openai_error(answer, {400})


def unknown_path(live):
    """L2: /foo is a 404 in OpenAI's shape that lists no URL patterns."""
    answer = send(live, "GET", "/foo", key=False)
    assert b"URLconf" not in answer.body and b"admin/" not in answer.body, str(answer)
    assert_openai_error(answer, {404})


CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
CASES = [
    pytest.param(deep_body(CHAT), id="F1-array-body-chat"),
    pytest.param(deep_body(TEXT), id="F1-array-body-completions"),
    pytest.param(deep_messages, id="F1-nested-messages"),
    pytest.param(null_assistant_content_http, id="F2-http"),
    pytest.param(null_assistant_content_websocket, id="F2-websocket"),
    pytest.param(raw_body(CHAT, CHAT_WITH % ("user", "hi " + SURROGATE, ""), {400}), id="F3-chat-content"),
    pytest.param(raw_body(TEXT, PROMPT_WITH % ("hi " + SURROGATE), {400}), id="F3-prompt"),
    # The same code point as raw bytes, what a careless encoder writes: not UTF-8 at all.
    pytest.param(
        raw_body(TEXT, (PROMPT_WITH % "hi ").encode().replace(b'hi "', b'hi \xed\xa0\x80"'), {400}),
        id="F3-prompt-raw-bytes",
    ),
    pytest.param(raw_body(CHAT, CHAT_WITH % ("user", "hi", ', "%s": 1' % SURROGATE), {400}), id="F4-field-name"),
    pytest.param(raw_body(CHAT, CHAT_WITH % (SURROGATE, "hi", ""), {400}), id="F4-role"),
    pytest.param(empty_prompt(""), id="F5-empty-string"),
    pytest.param(empty_prompt([""]), id="F5-list-of-empty-string"),
    pytest.param(body_over_the_limit, id="F6"),
    pytest.param(
        request("POST", "/v1/moderations", {404}, b'{"model": "smollm2", "input": "hi"}'), id="F7-post-unknown-v1-path"
    ),
    pytest.param(request("POST", "/metrics", {405}, b"{}"), id="F7-post-metrics"),
    pytest.param(request("GET", CHAT, {405}), id="F7-get-chat-completions"),
    pytest.param(sdk_moderations, id="F7-sdk-moderations"),
    pytest.param(deep_websocket_frame(nested()), id="F8-array-frame"),
    pytest.param(
        deep_websocket_frame('{"type": "request", "body": {"model": "smollm2", "messages": %s}}' % nested()),
        id="F8-request-frame",
    ),
    pytest.param(long_bearer_key, id="F9-20KB-bearer-key"),
    pytest.param(long_model_path, id="F9-100KB-model-path"),
    pytest.param(post_admin_without_slash, id="F10"),
    pytest.param(static_traversal("/static/../inference_platform/settings.py"), id="F11-dot-dot"),
    pytest.param(static_traversal("/static/%2e%2e/inference_platform/settings.py"), id="F11-encoded-dot-dot"),
    pytest.param(static_traversal("/static/admin/../../inference_platform/settings.py"), id="F11-two-levels"),
    pytest.param(chunked_body, id="F12"),
    pytest.param(admin_css, id="F13-admin-css"),
    pytest.param(docs_assets, id="F13-docs-assets"),
    pytest.param(refused_key("query"), id="L1-key-in-query"),
    pytest.param(refused_key("bearer"), id="L1-wrong-bearer-key"),
    pytest.param(bad_host_header, id="L2-bad-host"),
    pytest.param(unknown_path, id="L2-unknown-path"),
]


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_refused_cleanly(live, case):
    try:
        case(live)
    finally:  # whatever the answer was, the next normal request must work
        assert_serves_normally(live)


def test_the_server_survived_every_case(live):
    """After all cases: the process lives, serves, and recorded no 5xx for anything sent above."""
    assert_serves_normally(live)
    with sqlite3.connect(live.log_path.parent / "live.sqlite3") as connection:
        failed = connection.execute(
            "SELECT endpoint, status_code, error_type FROM monitoring_requestrecord WHERE status_code >= 500"
        ).fetchall()
    assert failed == []


@pytest.fixture(scope="module")
def complete_log(live) -> str:
    """The server's whole log, read after stopping it, so every line is flushed (used last)."""
    live.stop()
    return live.log()


def test_refused_keys_never_reach_the_log(complete_log):
    assert L1_SECRETS, "runs after the L1 cases"
    for secret in L1_SECRETS:
        assert secret not in complete_log


def test_each_refused_request_is_logged_once(complete_log):
    assert L1_MARKERS, "runs after the L1 cases"
    for marker in L1_MARKERS:
        messages = [LOG_PREFIX.sub("", line) for line in complete_log.splitlines() if marker in line]
        assert messages, f"the refused request {marker} was not logged"
        # Each message once: not once plain and once more formatted.
        assert len(messages) == len(set(messages)), messages


def test_no_request_was_answered_with_a_5xx(complete_log):
    # The access log: "HTTP POST /v1/chat/completions 500 [0.01, 127.0.0.1:1234]". The start-up
    # probe's "GET /health 503" while the model still loads is /health's documented answer, not a failure.
    server_errors = re.findall(r"(?:^|: )HTTP \S+ \S+ 5\d\d \[.*$", complete_log, re.MULTILINE)
    assert [line for line in server_errors if "HTTP GET /health 503 " not in line] == []


def test_static_files_with_debug_off(tmp_path):
    """F13 as the issue saw it: DEBUG=false and no collectstatic still serve the admin and docs assets."""
    server = start_live_server(tmp_path, extra_env={"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50)})
    try:
        admin_css(server)
        docs_assets(server)
    finally:
        server.stop()
