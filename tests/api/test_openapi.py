"""The OpenAPI schema at /v1/openapi.json, the docs page, and schemathesis against a live server."""

from __future__ import annotations

import inspect
import re
import zlib
from urllib.parse import urljoin

import httpx
import hypothesis
import jsonschema_rs
import pytest
import requests
import schemathesis
from django.core.management import call_command
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import views
from tests.compat.live_server import start_live_server

PATHS = {
    "/health": {"get"},
    "/v1/models": {"get"},
    "/v1/models/{model_id}": {"get"},
    "/v1/chat/completions": {"post"},
    "/v1/completions": {"post"},
    "/v1/messages": {"post"},
    "/v1/messages/count_tokens": {"post"},
    "/v1/embeddings": {"post"},
    "/tokenize": {"post"},
    "/detokenize": {"post"},
    "/v1/responses": {"post"},
    "/v1/responses/{response_id}": {"get", "delete"},
    "/v1/responses/{response_id}/input_items": {"get"},
    "/v1/system/status": {"get"},
    "/metrics": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = sorted((path, method) for path, methods in PATHS.items() for method in methods)
MODEL = "smollm2"  # the bundled model, served by the echo engine on the live server
EMBED_MODEL = "smollm2-embed"  # the bundled embedding model, echo there too


@pytest.fixture
async def anonymous(asgi_app):
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_schema_is_valid_openapi_listing_every_endpoint(anonymous):
    # A wrong key must not matter: the schema is public.
    response = await anonymous.get("/v1/openapi.json", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    document = response.json()

    assert document["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI meta-schema
    operations = {path: set(item) & HTTP_METHODS for path, item in document["paths"].items()}
    assert operations == PATHS
    assert "ws/v1/chat/completions" in document["info"]["description"]

    scheme = document["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, methods in PATHS.items():
        for method in methods:
            operation = document["paths"][path][method]
            expected = {
                "/health": [],
                "/metrics": [{}, {"MetricsToken": []}, {"AdminSession": []}],
                "/v1/messages": [{"ApiKeyAuth": []}, {"XApiKeyAuth": []}],
                "/v1/messages/count_tokens": [{"ApiKeyAuth": []}, {"XApiKeyAuth": []}],
            }.get(path, [{"ApiKeyAuth": []}])
            assert operation.get("security", []) == expected, (path, method)
            assert "500" in operation["responses"]
            if path != "/health":
                assert "401" in operation["responses"], path
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
        responses = document["paths"][path]["post"]["responses"]
        assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
        assert {"400", "404", "415", "502", "503"} <= set(responses)
    assert document["components"]["securitySchemes"]["XApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": document["components"]["securitySchemes"]["XApiKeyAuth"]["description"],
    }
    model = document["components"]["schemas"]["Model"]  # the OpenAI shape, plus whether it is loaded now
    assert {"id", "object", "created", "owned_by", "loaded"} <= set(model["required"])
    assert model["properties"]["loaded"]["type"] == "boolean"
    messages = document["paths"]["/v1/messages"]["post"]["responses"]
    assert set(messages["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "401", "404", "413", "429", "529"} <= set(messages)
    assert messages["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AnthropicError"}


def test_schema_generates_without_warnings(tmp_path):
    """drf-spectacular warns where it has to guess a type; a guess is not an accurate schema."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "openapi.yaml"))
    assert "/v1/chat/completions" in (tmp_path / "openapi.yaml").read_text()


def test_annotated_views_stay_async():
    """adrf dispatches a view asynchronously only if its handlers are coroutine functions."""
    for view in (
        views.HealthView,
        views.ModelListView,
        views.ModelDetailView,
        views.SystemStatusView,
        views.ResponseDetailView,
        views.ResponseInputItemsView,
    ):
        assert inspect.iscoroutinefunction(view.get), view
    assert inspect.iscoroutinefunction(views.ResponsesView.post)
    assert inspect.iscoroutinefunction(views.ResponseDetailView.delete)
    for view in (views.ChatCompletionsView, views.CompletionsView):
        assert inspect.iscoroutinefunction(view.post), view
        assert view.post is not views._CompletionView.post  # each carries its own schema
    for view in (views.EmbeddingsView, views.TokenizeView, views.DetokenizeView):
        assert inspect.iscoroutinefunction(view.post), view
    for view in (views.MessagesView, views.CountTokensView):
        assert inspect.iscoroutinefunction(view.post), view


def test_the_schema_validator_rejects_a_broken_document():
    """The meta-schema check above can fail: a document with a malformed operation does not pass it."""
    broken = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/x": {"get": {"responses": {"200": {"description": 5}}}}},
    }
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


# --- Against the platform started as the README says, on the fast echo engine -----------------


@pytest.fixture(scope="module")
def echo_live(tmp_path_factory):
    server = start_live_server(tmp_path_factory.mktemp("openapi"), extra_env={"INFERENCE_ENGINE": "echo"})
    assert server.api_key, server.log()
    yield server
    server.stop()


@pytest.mark.live
def test_docs_page_works_offline(echo_live):
    response = httpx.get(f"{echo_live.base_url}/v1/docs", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "swagger-ui" in html and "/v1/openapi.json" in html
    assert not re.search(r"https?://", html), "the docs page must not load anything from a CDN"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:  # every script, stylesheet and icon is served by the platform itself
        assert httpx.get(urljoin(str(response.url), asset), timeout=30).status_code == 200, asset


@pytest.fixture(scope="module")
def live_schema(echo_live):
    return schemathesis.openapi.from_url(f"{echo_live.base_url}/v1/openapi.json")


@pytest.mark.live
def test_live_schema_has_the_operations_fuzzed_below(live_schema):
    operations = {(op.ok().path, op.ok().method) for op in live_schema.get_all_operations()}
    assert operations == set(OPERATIONS)


@pytest.mark.live
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses"])
def test_documented_examples_answer_as_documented(live_schema, echo_live, path):
    """The docs' request examples succeed, and their JSON and SSE answers match the schema."""
    operation = live_schema[path]["post"]
    content = live_schema.raw_schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    bodies = [example["value"] for example in content["examples"].values()]
    assert {bool(body.get("stream")) for body in bodies} == {False, True}
    for body in bodies:
        case = operation.Case(body=body, media_type="application/json")
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {echo_live.api_key}"}, checks=CHECKS, timeout=60
        )
        assert response.status_code == 200, response.text
        if body.get("stream"):
            assert response.headers["content-type"][0].startswith("text/event-stream")
            events = [e for e in response.text.split("\n\n") if e]
            last = "event: response.completed\n" if path == "/v1/responses" else "data: [DONE]"
            assert len(events) > 3 and events[-1].startswith(last), events  # chunks were validated
        else:
            assert response.headers["content-type"][0] == "application/json"
            assert response.json()["output" if path == "/v1/responses" else "choices"], response.text


@pytest.mark.live
def test_documented_message_examples_answer_as_documented(live_schema, echo_live):
    """The Messages examples succeed with the key in `x-api-key`; JSON and every stream event match the schema."""
    operation = live_schema["/v1/messages"]["post"]
    content = live_schema.raw_schema["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    bodies = [example["value"] for example in content["examples"].values()]
    assert {bool(body.get("stream")) for body in bodies} == {False, True}
    for body in bodies:
        case = operation.Case(body=body, media_type="application/json")
        response = case.call_and_validate(headers={"x-api-key": echo_live.api_key}, checks=CHECKS, timeout=60)
        assert response.status_code == 200, response.text
        if body.get("stream"):
            events = [e for e in response.text.split("\n\n") if e]
            assert events[0].startswith("event: message_start") and events[-1].startswith("event: message_stop")
        else:
            assert response.json()["type"] == "message" and response.json()["content"], response.text


@pytest.mark.live
@pytest.mark.parametrize("path", ["/v1/embeddings", "/tokenize"])
def test_documented_one_shot_examples_answer_as_documented(live_schema, echo_live, path):
    """Embeddings and tokenize examples succeed with answers matching the schema (detokenize's name
    SmolLM2's ids: tests/api/test_tokenize.py sends it to the real model)."""
    operation = live_schema[path]["post"]
    content = live_schema.raw_schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    for example in content["examples"].values():
        case = operation.Case(body=example["value"], media_type="application/json")
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {echo_live.api_key}"}, checks=CHECKS, timeout=60
        )
        assert response.status_code == 200, response.text


def _use_served_model(case, path: str) -> None:
    """Random model names only reach the 404 path: send the served one half of the time (the
    embedding model to /v1/embeddings).

    The choice follows the generated name, so a failing case replays the same way.
    """
    for container, key in ((case.body, "model"), (case.path_parameters, "model_id")):
        if isinstance(container, dict) and isinstance(container.get(key), str):
            if zlib.crc32(container[key].encode()) % 2:
                container[key] = EMBED_MODEL if path == "/v1/embeddings" else MODEL


# /health and /metrics have no parameters, body or key, so there is nothing invalid to send them.
FUZZ = [
    (path, method, mode)
    for path, method in OPERATIONS
    for mode in GenerationMode
    if not (path in ("/health", "/metrics") and mode == GenerationMode.NEGATIVE)
]


@pytest.mark.live
@pytest.mark.parametrize(("path", "method", "mode"), FUZZ, ids=[f"{m.upper()} {p} {g}" for p, m, g in FUZZ])
def test_schemathesis_against_live_platform(live_schema, echo_live, path, method, mode):
    """Generated requests never get a 5xx, nor a status, content type or body the schema lacks.

    schemathesis's own pytest integration (`from_fixture(...).parametrize()`) breaks on pytest 9.2
    (it sets `Function._nodeid`, which pytest removed), so each operation gets a plain Hypothesis
    test over schemathesis's strategy for it.
    """
    operation = live_schema[path][method]
    headers = {"Authorization": f"Bearer {echo_live.api_key}"}
    session = requests.Session()

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=25,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def exercise(case):
        _use_served_model(case, path)
        case.call_and_validate(headers=headers, checks=CHECKS, session=session, timeout=60)

    with session:
        exercise()
