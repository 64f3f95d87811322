"""Authentication and the OpenAI error shape, through the real ASGI stack."""

import datetime as dt

import httpx
import pytest
from django.utils import timezone

from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_issue, api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)


def assert_openai_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture
async def anonymous(asgi_app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver") as c:
        yield c


async def test_missing_key_is_401(anonymous, echo_model):
    response = await anonymous.get("/v1/models")
    assert_openai_error(response, 401, "invalid_api_key")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ipk-00000000-secret", "Basic abc", "Bearer "])
async def test_wrong_key_is_401(anonymous, echo_model, header):
    response = await anonymous.get("/v1/models", headers={"Authorization": header})
    assert_openai_error(response, 401, "invalid_api_key")


@pytest.fixture
def dead_keys(transactional_db):
    revoked = api_key_issue(name="revoked")
    api_key_revoke(key=revoked.key)
    expired = api_key_issue(name="expired", expires_at=timezone.now() + dt.timedelta(seconds=60))
    ApiKey.objects.filter(pk=expired.key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    return revoked, expired


async def test_revoked_and_expired_keys_are_401(anonymous, echo_model, dead_keys):
    for issued in dead_keys:
        response = await anonymous.get("/v1/models", headers={"Authorization": f"Bearer {issued.plaintext}"})
        assert_openai_error(response, 401, "invalid_api_key")


async def test_error_message_never_echoes_the_key(anonymous, echo_model):
    secret = "ipk-abcdef12-this-is-a-secret-that-must-not-leak"
    response = await anonymous.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert "secret-that-must-not-leak" not in response.text


@pytest.fixture
def unloaded_model(transactional_db):
    from models_registry.services.served_models import served_model_register

    return served_model_register(name="never-loaded", source="", engine="echo")


async def test_health_needs_no_key(anonymous, unloaded_model):
    response = await anonymous.get("/health")
    # Nothing is preloaded in tests: the echo model is registered but not loaded yet.
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "no engine loaded" in response.json()["reason"]


async def test_health_without_models_says_why(anonymous, transactional_db):
    response = await anonymous.get("/health")
    assert response.status_code == 503
    assert "no enabled models" in response.json()["reason"]


async def test_unknown_url_is_openai_404(client, echo_model):
    assert_openai_error(await client.get("/v1/nothing-here"), 404, "unknown_url")


async def test_bad_json_is_400(client, echo_model):
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": "hi"}, "messages"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "echo", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}, "stop"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stop": 7}, "stop"),
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "frobnicate": True}, "frobnicate"),
        (
            {
                "model": "echo",
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": True},
            },
            "stream_options",
        ),
    ],
)
async def test_invalid_bodies_are_400_naming_the_param(client, echo_model, body, param):
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, param=param)


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        # Echo parses calls out of what it echoes, but has no grammar to force one.
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ],
)
async def test_unsupported_features_are_400_naming_param_and_engine(client, echo_model, extra, param):
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter", param
    )
    assert "echo" in error["message"]


async def test_image_content_is_unsupported(client, echo_model):
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
    }
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter")


async def test_unknown_model_is_404(client, echo_model):
    body = {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 404, "model_not_found", "model")


async def test_context_overflow_is_400(client, echo_model):
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, "context_length_exceeded")


async def test_context_overflow_when_streaming_is_a_400_not_a_broken_stream(client, echo_model):
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000, "stream": True}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, "context_length_exceeded")


async def test_wrong_method_is_405(client, echo_model):
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


async def test_errors_leave_the_engine_usable(client, echo_model):
    bad = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000}
    for _ in range(3):
        await client.post("/v1/chat/completions", json=bad)
    good = {"model": "echo", "messages": [{"role": "user", "content": "still alive"}]}
    response = await client.post("/v1/chat/completions", json=good)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "still alive"


@pytest.fixture
def vllm_model(transactional_db, gguf_path):
    from models_registry.services.served_models import served_model_register

    return served_model_register(name="needs-vllm", source=gguf_path, engine="vllm")


async def test_engine_that_cannot_run_here_is_503(client, vllm_model):
    """vLLM needs a CUDA GPU and is not installed on these machines."""
    body = {"model": "needs-vllm", "messages": [{"role": "user", "content": "hi"}]}
    error = assert_openai_error(await client.post("/v1/chat/completions", json=body), 503, "service_unavailable")
    assert "vLLM is not installed" in error["message"]


async def test_django_level_bad_request_is_openai_json(client, echo_model):
    """A request Django itself refuses (here: an empty Host header) still answers in the error shape."""
    response = await client.post("/v1/completions", json={"model": "echo", "prompt": "x"}, headers={"host": ""})
    assert_openai_error(response, 400, "bad_request")
    assert response.headers["content-type"].startswith("application/json")
