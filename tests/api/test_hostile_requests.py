"""Hostile request framing and routing through the real ASGI stack: each gets a 4xx in OpenAI's shape.

Issue 9's F1, F3, F4, F6, F7, F10, F11 and F12 (F8, the WebSocket side, is in test_websocket.py).
"""

import json
import socket

import httpx
import openai
import pytest
from channels.testing import HttpCommunicator
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from api.json_body import MAX_DEPTH, InvalidJson, parse_json
from monitoring.models import RequestRecord
from tests.compat.live_server import start_live_server

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
ECHO_CHAT = {"model": "echo", "messages": [{"role": "user", "content": "still alive"}]}
JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


def assert_openai_error(response, status, code=None):
    assert response.status_code == status, response.text[:1000]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def assert_still_serving(client):
    response = await client.post(CHAT, json=ECHO_CHAT)
    assert response.status_code == 200, response.text[:1000]
    assert response.json()["choices"][0]["message"]["content"] == "still alive"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# F1: nesting


@pytest.mark.parametrize(
    "body",
    [
        nested(10_000),  # past Python's recursion limit: a RecursionError in the parser today
        '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stop": ' + nested(10_000) + "}",
        '{"model": "echo", "messages": [{"role": "user", "content": ' + nested(MAX_DEPTH) + "}]}",  # parses, too deep
    ],
    ids=["10000 deep", "10000 deep in a field", "just over the limit"],
)
async def test_deep_nesting_is_400_invalid_json(client, echo_model, body):
    error = assert_openai_error(await client.post(CHAT, content=body.encode(), headers=JSON), 400, "invalid_json")
    assert f"more than {MAX_DEPTH} levels" in error["message"]
    await assert_still_serving(client)


def test_nesting_up_to_the_limit_parses():
    assert parse_json(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    with pytest.raises(InvalidJson):
        parse_json(nested(MAX_DEPTH + 1))
    with pytest.raises(InvalidJson):
        parse_json('{"a": NaN}')  # as DRF's strict parser refused it


# F3, F4: lone surrogates


@pytest.mark.parametrize(
    "path, body",
    [
        (CHAT, '{"model": "echo", "messages": [{"role": "user", "content": "hi \\ud800"}]}'),
        (CHAT, '{"model": "echo", "messages": [{"role": "\\ud800", "content": "hi"}]}'),
        (CHAT, '{"model": "echo", "\\ud800": 1, "messages": [{"role": "user", "content": "hi"}]}'),
        (CHAT, '{"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}'),
        ("/v1/completions", '{"model": "echo", "prompt": "\\ud800"}'),
        ("/v1/completions", '{"model": "echo", "prompt": ["ok", "\\udbff"]}'),
    ],
    ids=["content", "role", "field name", "content part", "prompt", "prompt list"],
)
async def test_lone_surrogates_are_400_invalid_json_without_echoing_them(client, echo_model, path, body):
    response = await client.post(path, content=body.encode(), headers=JSON)
    error = assert_openai_error(response, 400, "invalid_json")
    assert not any("\ud800" <= char <= "\udfff" for char in error["message"])
    assert "surrogate" in error["message"]
    record = await RequestRecord.objects.aget()  # refused inside the request's lifecycle: recorded
    assert record.status_code == 400 and record.error_type == "invalid_json"
    await assert_still_serving(client)


async def test_a_surrogate_pair_is_one_character_and_accepted(client, echo_model):
    """json.dumps writes astral characters as escaped pairs (httpx does so): those are not lone."""
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "smile \U0001f600"}]})
    assert "\\ud83d\\ude00" in body
    response = await client.post(CHAT, content=body.encode(), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "smile \U0001f600"


async def test_invalid_utf8_is_400_invalid_json(client, echo_model):
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    assert_openai_error(await client.post(CHAT, content=body, headers=JSON), 400, "invalid_json")


# F6, F12: body size and chunked bodies


def chat_of_size(size: int) -> bytes:
    """A chat body of exactly `size` bytes, its content words of one letter."""
    empty = json.dumps({"model": "echo", "messages": [{"role": "user", "content": ""}]}).encode()
    filler = (b"x " * size)[: size - len(empty)]
    return empty.replace(b'""', b'"' + filler + b'"')


async def chunked(body: bytes, piece: int = 64 * 1024):
    """An async generator body: httpx sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


async def test_a_body_over_the_default_limit_is_413(client, echo_model):
    error = assert_openai_error(
        await client.post(CHAT, content=chat_of_size(5 * MIB), headers=JSON), 413, "request_too_large"
    )
    assert str(4 * MIB) in error["message"]
    await assert_still_serving(client)


def prompt_words(response) -> int:
    """The echo model's prompt tokens: one per word of the body that reached it."""
    assert response.status_code == 200, response.text[:1000]
    return response.json()["usage"]["prompt_tokens"]


async def test_a_body_under_the_default_limit_reaches_the_model(client, echo_model):
    """3 MiB is under 4 MiB (a 500 before): read whole, all of its 1.5 million words reach the model."""
    body = chat_of_size(3 * MIB)
    response = await client.post(CHAT, content=body, headers=JSON)
    assert prompt_words(response) == body.count(b"x")


async def test_the_limit_is_a_setting_and_counts_chunked_bodies(client, echo_model, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2000
    assert_openai_error(await client.post(CHAT, content=chat_of_size(2001), headers=JSON), 413, "request_too_large")
    assert_openai_error(
        await client.post(CHAT, content=chunked(chat_of_size(2001), piece=500), headers=JSON), 413, "request_too_large"
    )
    body = chat_of_size(2000)
    response = await client.post(CHAT, content=chunked(body, piece=500), headers=JSON)
    assert prompt_words(response) == body.count(b"x")  # at the limit: read whole


async def test_a_chunked_body_is_read(client, echo_model):
    body = json.dumps(ECHO_CHAT).encode()
    request = client.build_request("POST", CHAT, content=chunked(body, piece=7), headers=JSON)
    assert request.headers["transfer-encoding"] == "chunked" and "content-length" not in request.headers
    response = await client.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "still alive"


async def test_a_chunked_streaming_request_streams(client, echo_model):
    body = json.dumps({**ECHO_CHAT, "stream": True}).encode()
    async with client.stream("POST", CHAT, content=chunked(body, piece=5), headers=JSON) as response:
        assert response.status_code == 200
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert text.rstrip().endswith("data: [DONE]") and "alive" in text


async def test_an_invalid_content_length_is_400(asgi_app, echo_model, api_key):
    communicator = HttpCommunicator(
        asgi_app,
        "POST",
        CHAT,
        body=json.dumps(ECHO_CHAT).encode(),
        headers=[
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"12abc"),
        ],
    )
    response = await communicator.get_response(timeout=30)
    assert response["status"] == 400
    assert json.loads(response["body"])["error"]["code"] == "bad_request"


# F7: unknown paths and wrong methods


@pytest.fixture
async def anonymous(asgi_app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver") as c:
        yield c


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "GET"])
@pytest.mark.parametrize("path", ["/v1/moderations", "/v1/images/generations", "/v1/chat/completions/extra"])
async def test_unknown_api_paths_are_openai_404_for_every_method(client, echo_model, method, path):
    """Not CSRF's HTML 403: the catch-all must answer before CSRF protection looks at a POST."""
    assert_openai_error(await client.request(method, path, json={"model": "echo"}), 404, "unknown_url")


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
        ("DELETE", "/v1/models"),
        ("PUT", "/v1/chat/completions"),
        ("POST", "/v1/models/echo"),
        ("DELETE", "/health"),
    ],
)
async def test_a_wrong_method_on_a_known_path_is_openai_405(client, echo_model, method, path):
    assert_openai_error(await client.request(method, path), 405, "method_not_allowed")


async def test_metrics_still_answers_get(anonymous, echo_model, settings):
    settings.METRICS_ACCESS = "open"
    response = await anonymous.get("/metrics")
    assert response.status_code == 200 and "vllm:" in response.text


async def test_the_openai_sdk_gets_not_found_for_an_endpoint_we_lack(asgi_app, api_key, echo_model):
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport) as http_client:
        sdk = openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key=api_key, http_client=http_client, max_retries=0
        )
        with pytest.raises(openai.NotFoundError) as raised:
            await sdk.moderations.create(model="echo", input="hi")
    assert raised.value.status_code == 404 and raised.value.code == "unknown_url"


# F10: POST /admin (and any path whose slash-appended form exists)


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_admin_without_its_slash_redirects_never_500(anonymous, transactional_db, settings, debug, method):
    """Under DEBUG, CommonMiddleware's APPEND_SLASH raised a RuntimeError for a POST."""
    settings.DEBUG = debug
    response = await anonymous.request(method, "/admin")
    assert response.status_code == 301, response.text[:500]
    assert response.headers["location"] == "/admin/"


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_bare_v1_is_openai_404_never_500(client, echo_model, settings, debug, method):
    """ "/v1/" matches the API's catch-all, so APPEND_SLASH raised for a POST to "/v1" under DEBUG."""
    settings.DEBUG = debug
    assert_openai_error(await client.request(method, "/v1"), 404, "unknown_url")


# F11: path traversal under /static/


TRAVERSAL = "/static/../inference_platform/settings.py"


async def get_raw(app, path: str) -> dict:
    """GET `path` exactly as given: no client normalises its dot segments."""
    return await HttpCommunicator(app, "GET", path).get_response(timeout=30)


async def test_static_traversal_through_the_app_is_404(asgi_app, transactional_db):
    response = await get_raw(asgi_app, TRAVERSAL)
    assert response["status"] == 404
    assert json.loads(response["body"])["error"]["code"] == "unknown_url"
    assert b"SECRET_KEY" not in response["body"]


async def test_static_traversal_through_runservers_debug_static_handler_is_404(asgi_app, transactional_db, settings):
    """What `manage.py runserver` (and `serve` under DEBUG) put in front of the app; it raised a 500."""
    settings.DEBUG = True
    response = await get_raw(ASGIStaticFilesHandler(asgi_app), TRAVERSAL)
    assert response["status"] == 404
    assert b"SECRET_KEY" not in response["body"]
    transport = httpx.ASGITransport(app=ASGIStaticFilesHandler(asgi_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        found = await browser.get("/static/admin/css/base.css")
    assert found.status_code == 200 and "body" in found.text  # the handler still serves what it should


async def test_static_traversal_through_whitenoise_under_debug_is_refused(transactional_db, settings):
    """Under DEBUG WhiteNoise looks files up through the finders on every request (a guard: it
    refuses non-canonical URLs itself, and passed before the fix too)."""
    settings.DEBUG = True
    app = get_asgi_application()  # its middleware reads DEBUG now
    response = await get_raw(app, TRAVERSAL)
    assert response["status"] == 404
    assert b"SECRET_KEY" not in response["body"]


# The same through daphne, as ./run.sh serves (DEBUG's static handler in front, if on)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_live_server(tmp_path_factory.mktemp("hostile_requests"))
    assert server.api_key, server.log()
    yield server
    server.stop()


@pytest.mark.live
@pytest.mark.model
def test_live_chunked_chat_completion(live):
    body = json.dumps({"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})

    def pieces():
        for start in range(0, len(body), 10):
            yield body[start : start + 10].encode()

    headers = {"Authorization": f"Bearer {live.api_key}", "Content-Type": "application/json"}
    response = httpx.post(f"{live.base_url}{CHAT}", content=pieces(), headers=headers, timeout=120)
    assert response.status_code == 200, response.text[:1000]
    assert response.json()["usage"]["completion_tokens"] >= 1
    too_big = httpx.post(
        f"{live.base_url}{CHAT}", content=(b"x" * 1024 for _ in range(5 * 1024)), headers=headers, timeout=120
    )
    assert_openai_error(too_big, 413, "request_too_large")


@pytest.mark.live
def test_live_static_traversal_is_404(live):
    host, port = live.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET {TRAVERSAL} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:500]
    assert b"SECRET_KEY" not in answer
