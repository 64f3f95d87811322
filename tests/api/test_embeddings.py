"""/v1/embeddings through the real ASGI stack: on echo for the plumbing, on SmolLM2 for real vectors."""

import base64
import math
import struct

import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async

from models_registry.services.served_models import served_model_register
from monitoring.models import RequestRecord
from serving import limits
from serving.limits import LocalLimiter
from tests.serving.test_limits import Clock, assert_rate_limited, set_limits

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/v1/embeddings"
ECHO_SIZE = 32  # the echo engine's default embedding_size


@pytest.fixture
def echo_embed(transactional_db):
    return served_model_register(name="echo-embed", source="", engine="echo", context_length=16, task="embed")


@pytest.fixture
def smollm2_embed(transactional_db, gguf_path):
    return served_model_register(
        name="smollm2-embed", source=gguf_path, engine="llama_cpp", context_length=256, task="embed"
    )


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def decoded(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def records():
    return await sync_to_async(list)(RequestRecord.objects.order_by("created_at"))


async def test_shape_usage_and_one_record(client, echo_embed):
    response = await client.post(PATH, json={"model": "echo-embed", "input": ["one two three", "four"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "echo-embed"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    for item in body["data"]:
        assert len(item["embedding"]) == ECHO_SIZE
        assert math.isclose(math.sqrt(sum(x * x for x in item["embedding"])), 1.0, rel_tol=1e-6)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    (record,) = await records()
    assert (record.endpoint, record.status_code, record.model_name, record.engine) == (
        "embeddings",
        200,
        "echo-embed",
        "echo",
    )
    assert (record.prompt_tokens, record.completion_tokens, record.finish_reason) == (4, 0, "stop")


async def test_every_input_shape_and_both_encodings(client, echo_embed):
    ids = [11, 22, 33]
    cases = {
        "a string": ("alpha beta", 1),
        "strings": (["alpha", "beta gamma", "delta"], 3),
        "a token array": (ids, 1),
        "token arrays": ([ids, [44], [55, 66]], 3),
    }
    for name, (value, count) in cases.items():
        floats = (await client.post(PATH, json={"model": "echo-embed", "input": value})).json()
        packed = await client.post(PATH, json={"model": "echo-embed", "input": value, "encoding_format": "base64"})
        packed = packed.json()
        assert len(floats["data"]) == len(packed["data"]) == count, name
        for as_floats, as_base64 in zip(floats["data"], packed["data"], strict=True):
            assert isinstance(as_base64["embedding"], str)
            # float32 on the wire: equal to the float answer within float32's precision
            assert decoded(as_base64["embedding"]) == pytest.approx(as_floats["embedding"], abs=1e-6), name
    assert len(await records()) == 2 * len(cases)


async def test_text_and_its_token_ids_embed_alike(client, echo_embed):
    tokens = (await client.post("/tokenize", json={"model": "echo-embed", "prompt": "calm blue sea"})).json()
    by_text, by_ids = (
        await client.post(PATH, json={"model": "echo-embed", "input": "calm blue sea"}),
        await client.post(PATH, json={"model": "echo-embed", "input": tokens["tokens"]}),
    )
    assert by_text.json()["data"][0]["embedding"] == by_ids.json()["data"][0]["embedding"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["fine", ""]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["mixed", 3]}, "input"),
        ({"input": [1, -2]}, "input"),
        ({"input": [True]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": "a " * 40}, "input"),  # 40 tokens past echo-embed's 16-token context
        ({"input": "sea", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "sea", "dimensions": 8}, "dimensions"),
        ({"input": "sea", "dimensions": 0}, "dimensions"),
        ({"input": "sea", "temperature": 1}, "temperature"),
    ],
)
async def test_bad_requests_are_400_naming_the_field_and_recorded(client, echo_embed, extra, param):
    assert_error(await client.post(PATH, json={"model": "echo-embed", **extra}), 400, param=param)
    (record,) = await records()
    assert (record.endpoint, record.status_code) == ("embeddings", 400)


async def test_dimensions_equal_to_the_model_size_and_user_are_accepted(client, echo_embed):
    body = {"model": "echo-embed", "input": "sea", "dimensions": ECHO_SIZE, "user": "someone"}
    assert (await client.post(PATH, json=body)).status_code == 200


async def test_a_generate_model_refuses_embeddings_and_an_embed_model_chat(client, echo_embed, echo_model):
    error = assert_error(await client.post(PATH, json={"model": "echo", "input": "sea"}), 400, param="model")
    assert "embeddings" in error["message"]
    chat = {"model": "echo-embed", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(await client.post("/v1/chat/completions", json=chat), 400, param="model")
    assert_error(await client.post("/v1/completions", json={"model": "echo-embed", "prompt": "hi"}), 400, "model")
    assert [r.status_code for r in await records()] == [400, 400, 400]


async def test_an_engine_without_embeddings_is_refused_naming_model(client, api_key, transactional_db):
    await sync_to_async(served_model_register)(
        name="remote", source="x", engine="upstream", engine_options={"base_url": "http://127.0.0.1:9"}
    )
    assert_error(await client.post(PATH, json={"model": "remote", "input": "sea"}), 400, param="model")


async def test_unknown_model_and_missing_key(client, echo_embed, asgi_app):
    assert_error(await client.post(PATH, json={"model": "nope", "input": "sea"}), 404, code="model_not_found")
    client.headers.pop("Authorization")
    assert_error(await client.post(PATH, json={"model": "echo-embed", "input": "sea"}), 401)


async def test_per_key_limits_hold(client, echo_embed, api_key, monkeypatch):
    monkeypatch.setattr(limits, "_local", LocalLimiter(clock=Clock()))
    await set_limits(api_key, rpm_limit=2)
    for _ in range(2):
        assert (await client.post(PATH, json={"model": "echo-embed", "input": "sea"})).status_code == 200
    assert_rate_limited(await client.post(PATH, json={"model": "echo-embed", "input": "sea"}))
    assert [(r.endpoint, r.status_code) for r in await records()] == [("embeddings", 200)] * 2 + [("embeddings", 429)]


async def test_answers_match_the_openapi_schema(client, echo_embed):
    components = (await client.get("/v1/openapi.json")).json()["components"]
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/EmbeddingList", "components": components})
    for encoding in ("float", "base64"):
        body = {"model": "echo-embed", "input": ["a", "b"], "encoding_format": encoding}
        validator.validate((await client.post(PATH, json=body)).json())


@pytest.mark.model
async def test_smollm2_vectors_through_the_api(client, smollm2_embed):
    body = {"model": "smollm2-embed", "input": ["The cat sleeps.", "A kitten naps.", "Tax filing deadlines"]}
    response = await client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    cat, kitten, tax = (item["embedding"] for item in response.json()["data"])
    assert len(cat) == 576

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(cat, kitten) > cosine(cat, tax)
    (record,) = await records()
    assert record.engine == "llama_cpp" and record.prompt_tokens == response.json()["usage"]["prompt_tokens"] > 0
