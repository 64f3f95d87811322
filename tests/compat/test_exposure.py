"""What the platform started as the README says shows to the network: no debug pages, no keys in the
log, an answer to oversized requests, static files, and HTTPS behind a TLS proxy."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
import websockets.sync.client

from tests.inference_platform.test_settings import PRODUCTION_ENV

from .live_server import start_live_server

pytestmark = pytest.mark.live

SECRET = "ipk-l1secret-DoNotLogThisKeyAnywhere0123456789"
WRONG_BEARER = "ipk-l1bearer-NorThisOneEither9876543210"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """./run.sh with no settings beyond the port and database: the served default."""
    server = start_live_server(tmp_path_factory.mktemp("exposure"), extra_env={"INFERENCE_ENGINE": "echo"})
    assert server.api_key, server.log()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    """./run.sh with the README's production environment, as a TLS proxy in front of it would reach it."""
    env = {
        **PRODUCTION_ENV,
        "INFERENCE_ENGINE": "echo",
        # The proxy passes Host on; 127.0.0.1 is the readiness probe's own (plain HTTP, exempt from redirects).
        "ALLOWED_HOSTS": "llm.example.com,127.0.0.1",
    }
    server = start_live_server(tmp_path_factory.mktemp("proxy"), extra_env=env)
    yield server
    server.stop()


def _log_lines_after(server, offset: int, expected: int, pattern: str) -> list[str]:
    """The log lines after `offset` that match `pattern`, once at least `expected` have been written."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in server.log()[offset:].splitlines() if re.search(pattern, line)]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


# --- L2: the served default is no debug server ---------------------------------------------------


def test_the_served_default_runs_with_debug_off(served):
    assert "(DEBUG off)" in served.log()


def test_a_bad_host_header_gets_no_debug_page(served):
    offset = len(served.log())
    response = httpx.get(f"{served.base_url}/v1/models", headers={"Host": "a b"}, timeout=30)
    assert response.status_code == 400
    assert len(response.content) < 2000, "Django's debug page is about 74 KB"
    for leak in ("Traceback", "SECRET_KEY", "settings", "DisallowedHost"):
        assert leak not in response.text
    assert len(_log_lines_after(served, offset, 1, r"/v1/models 400")) == 1
    log = served.log()[offset:]
    assert "Invalid HTTP_HOST header: 'a b'" in log and "Traceback" not in log  # one line, no traceback


def test_an_unknown_path_lists_no_url_patterns(served):
    for path in ("/foo", "/v2/models", "/static/nope.css"):
        response = httpx.get(f"{served.base_url}{path}", timeout=30)
        assert response.status_code == 404, path
        assert "urlpatterns" not in response.text and "URLconf" not in response.text, path
        assert "v1/chat/completions" not in response.text, path


# --- L1: one log line per request, without keys ----------------------------------------------------


def test_keys_are_never_logged_and_each_request_once(served):
    offset = len(served.log())
    in_query = httpx.get(f"{served.base_url}/v1/models", params={"api_key": SECRET, "x": "1"}, timeout=30)
    wrong = httpx.get(f"{served.base_url}/v1/models", headers={"Authorization": f"Bearer {WRONG_BEARER}"}, timeout=30)
    in_path = httpx.get(f"{served.base_url}/v1/models/{SECRET}", timeout=30)
    assert (in_query.status_code, wrong.status_code, in_path.status_code) == (401, 401, 401)
    with pytest.raises(websockets.exceptions.WebSocketException):
        with websockets.sync.client.connect(
            f"{served.base_url.replace('http', 'ws')}/ws/v1/chat/completions?api_key={SECRET}", open_timeout=30
        ) as ws:
            ws.send('{"type": "request", "body": {}}')
            ws.recv(timeout=30)
            ws.recv(timeout=30)

    lines = _log_lines_after(served, offset, 3, r"/v1/models")
    assert len(lines) == 3, lines  # no "Unauthorized: /v1/models" beside the access line
    assert "/v1/models?api_key=[redacted]&x=[redacted] 401" in lines[0]
    _log_lines_after(served, offset, 1, r"WebSocket DISCONNECTED")
    log = served.log()[offset:]
    assert "l1secret" not in log and "DoNotLog" not in log and "l1bearer" not in log, log


# --- F9: oversized request lines and headers get an answer ------------------------------------------


def _raw(server, request: bytes) -> tuple[int, bytes]:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_oversized_requests_get_414_or_431_in_the_openai_shape(served):
    bearer = httpx.get(f"{served.base_url}/v1/models", headers={"Authorization": "Bearer " + "k" * 20_000}, timeout=30)
    assert bearer.status_code == 431, bearer.text
    assert bearer.json()["error"]["code"] == "request_header_fields_too_large"
    assert set(bearer.json()["error"]) == {"message", "type", "param", "code"}

    model_id = httpx.get(f"{served.base_url}/v1/models/{'m' * 30_000}", timeout=30)  # httpx stops at 64 KB
    assert model_id.status_code == 414, model_id.text
    assert model_id.json()["error"]["code"] == "request_uri_too_long"
    status, body = _raw(served, b"GET /v1/models/" + b"m" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and b'"request_uri_too_long"' in body

    many_headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    status, body = _raw(served, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n")
    assert status == 431 and b'"request_header_fields_too_large"' in body

    # A body after the oversized head is swallowed, not answered with a reset.
    status, body = _raw(
        served,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"b" * 30_000
        + b"\r\nContent-Length: 200000\r\n\r\n"
        + b"{" * 200_000,
    )
    assert status == 431

    ok = httpx.get(f"{served.base_url}/v1/models", headers={"Authorization": f"Bearer {served.api_key}"}, timeout=30)
    assert ok.status_code == 200
    lines = _log_lines_after(served, 0, 5, r" (414|431) \[")
    assert sorted(len(line) < 400 for line in lines) == [True] * 5, [line[:200] for line in lines]


# --- F13 and deploy settings: DEBUG off behind a TLS proxy -------------------------------------------

HTTPS = {"Host": "llm.example.com", "X-Forwarded-Proto": "https"}


def test_static_files_are_served_with_debug_off(behind_proxy):
    with httpx.Client(base_url=behind_proxy.base_url, headers=HTTPS, timeout=30) as client:
        css = client.get("/static/admin/css/base.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        docs = client.get("/v1/docs")
        assert docs.status_code == 200
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', docs.text)
        assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets), assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


def _cookie(response: httpx.Response, name: str) -> tuple[str, str]:
    """A cookie's value and its Set-Cookie line (httpx would not send a Secure cookie over plain HTTP)."""
    line = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}="))
    return line.split(";", 1)[0].split("=", 1)[1], line


def test_admin_login_works_behind_a_tls_proxy(behind_proxy):
    with httpx.Client(base_url=behind_proxy.base_url, timeout=30) as client:
        plain = client.get("/admin/login/", headers={"Host": "llm.example.com"})
        assert plain.status_code == 301 and plain.headers["location"] == "https://llm.example.com/admin/login/"

        page = client.get("/admin/login/", headers=HTTPS)
        assert page.status_code == 200
        assert page.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
        csrf_cookie, line = _cookie(page, "csrftoken")
        assert "Secure" in line
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        login = client.post(
            "/admin/login/?next=/admin/",
            headers={
                **HTTPS,
                "Origin": "https://llm.example.com",
                "Cookie": f"csrftoken={csrf_cookie}",
            },
            data={"username": "admin", "password": "live-test-password", "csrfmiddlewaretoken": token},
        )
        assert login.status_code == 302, login.text[:500]
        session, line = _cookie(login, "sessionid")
        assert "Secure" in line and "HttpOnly" in line

        admin = client.get("/admin/", headers={**HTTPS, "Cookie": f"sessionid={session}"})
        assert admin.status_code == 200 and "Site administration" in admin.text

        # The same POST from a page of another origin is still refused.
        forged = client.post(
            "/admin/login/",
            headers={
                **HTTPS,
                "Origin": "https://evil.example",
                "Cookie": f"csrftoken={csrf_cookie}",
            },
            data={"username": "admin", "password": "live-test-password", "csrfmiddlewaretoken": token},
        )
        assert forged.status_code == 403


def test_health_answers_plain_http_for_probes(behind_proxy):
    assert httpx.get(f"{behind_proxy.base_url}/health", timeout=30).status_code == 200


def test_a_web_process_without_setup(tmp_path):
    """`serve --no-setup` (a distributed web process) serves without migrating or issuing anything."""
    from .live_server import REPO, free_port

    database = tmp_path / "untouched.sqlite3"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "DEBUG")}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        DATABASE_URL=f"sqlite:///{database}",
        INFERENCE_ENGINE="echo",
        PRELOAD_MODELS="false",
    )
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-setup"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/docs", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    output = (tmp_path / "serve.log").read_text()
    assert "API key:" not in output and "(DEBUG off)" in output
    tables = sqlite3.connect(database).execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []
