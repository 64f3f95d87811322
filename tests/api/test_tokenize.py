"""/tokenize and /detokenize in vLLM's and llama-server's shapes, through the real ASGI stack."""

import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async

from models_registry.services.served_models import served_model_register
from monitoring.models import RequestRecord
from tests.api.test_embeddings import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the sea."}]


async def records():
    return await sync_to_async(list)(RequestRecord.objects.order_by("created_at"))


async def test_vllm_prompt_shape_with_one_record(client, echo_model):
    response = await client.post("/tokenize", json={"model": "echo", "prompt": "one two  three"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"tokens", "count", "max_model_len"}
    assert body["count"] == len(body["tokens"]) == 3 and body["max_model_len"] == 512
    (record,) = await records()
    assert (record.endpoint, record.status_code, record.model_name, record.finish_reason) == (
        "tokenize",
        200,
        "echo",
        "stop",
    )


async def test_llama_server_content_shape_and_detokenize_round_trip(client, echo_model):
    tokens = (await client.post("/tokenize", json={"content": "calm  blue\nsea"})).json()["tokens"]
    back = await client.post("/detokenize", json={"tokens": tokens})
    assert back.status_code == 200, back.text
    assert back.json() == {"prompt": "calm  blue\nsea", "content": "calm  blue\nsea"}
    assert [r.endpoint for r in await records()] == ["tokenize", "detokenize"]


async def test_messages_count_as_a_chat_completion_counts_them(client, echo_model):
    counted = (await client.post("/tokenize", json={"model": "echo", "messages": CHAT})).json()["count"]
    completion = await client.post("/v1/chat/completions", json={"model": "echo", "messages": CHAT, "max_tokens": 1})
    assert counted == completion.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, None),
        ({"prompt": "a", "content": "b"}, None),
        ({"prompt": "a", "add_special_tokens": "maybe"}, "add_special_tokens"),
        ({"messages": CHAT, "add_special_tokens": True}, "add_special_tokens"),
        ({"prompt": "a", "add_special": True, "add_special_tokens": False}, "add_special"),
        ({"prompt": "a", "with_pieces": True}, "with_pieces"),
        ({"messages": []}, "messages"),
        ({"prompt": 3}, "prompt"),
    ],
)
async def test_bad_tokenize_bodies_are_400(client, echo_model, body, param):
    error = assert_error(await client.post("/tokenize", json={"model": "echo", **body}), 400)
    assert error["param"] == param
    (record,) = await records()
    assert (record.endpoint, record.status_code) == ("tokenize", 400)


@pytest.mark.parametrize("tokens", [[-1], ["a"], 5, [2**31]])
async def test_bad_detokenize_bodies_are_400_naming_tokens(client, echo_model, tokens):
    error = assert_error(await client.post("/detokenize", json={"model": "echo", "tokens": tokens}), 400)
    assert error["param"].startswith("tokens")  # the list, or the item at fault (tokens[0])


async def test_an_id_the_tokenizer_never_made_is_400(client, echo_model):
    assert_error(await client.post("/detokenize", json={"model": "echo", "tokens": [123]}), 400, param="tokens")


async def test_model_is_required_unless_the_key_has_one_generation_model(client, echo_model, transactional_db):
    await sync_to_async(served_model_register)(
        name="echo-embed", source="", engine="echo", task="embed"
    )  # an embed model is not a choice
    assert (await client.post("/tokenize", json={"prompt": "sea"})).status_code == 200
    await sync_to_async(served_model_register)(name="echo-two", source="", engine="echo")
    error = assert_error(await client.post("/tokenize", json={"prompt": "sea"}), 400, param="model")
    assert error["code"] == "missing_required_parameter"
    # An embed model tokenizes when named.
    assert (await client.post("/tokenize", json={"model": "echo-embed", "prompt": "sea"})).status_code == 200


async def test_unknown_model_is_404_and_a_key_is_required(client, echo_model):
    assert_error(await client.post("/tokenize", json={"model": "nope", "prompt": "a"}), 404, code="model_not_found")
    client.headers.pop("Authorization")
    assert_error(await client.post("/tokenize", json={"model": "echo", "prompt": "a"}), 401)
    assert_error(await client.post("/detokenize", json={"model": "echo", "tokens": []}), 401)


async def test_an_engine_without_a_tokenizer_is_refused_naming_model(client, transactional_db):
    await sync_to_async(served_model_register)(
        name="remote", source="x", engine="upstream", engine_options={"base_url": "http://127.0.0.1:9"}
    )
    assert_error(await client.post("/tokenize", json={"model": "remote", "prompt": "a"}), 400, param="model")


async def test_answers_match_the_openapi_schema(client, echo_model):
    components = (await client.get("/v1/openapi.json")).json()["components"]

    def validator(name):
        return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": components})

    tokens = (await client.post("/tokenize", json={"prompt": "a b"})).json()
    validator("Tokens").validate(tokens)
    validator("Detokenized").validate((await client.post("/detokenize", json={"tokens": tokens["tokens"]})).json())


# --- the real tokenizer -------------------------------------------------------------------------


@pytest.mark.model
async def test_smollm2_ids_match_generation_and_round_trip(client, smollm2):
    counted = (await client.post("/tokenize", json={"model": "smollm2", "messages": CHAT})).json()
    completion = await client.post("/v1/chat/completions", json={"model": "smollm2", "messages": CHAT, "max_tokens": 1})
    assert counted["count"] == completion.json()["usage"]["prompt_tokens"] == len(counted["tokens"])
    assert counted["max_model_len"] == 2048

    opened = (await client.post("/tokenize", json={"messages": CHAT, "add_generation_prompt": False})).json()
    assert opened["count"] < counted["count"] and counted["tokens"][: opened["count"]] == opened["tokens"]

    text = "The sea, the sky: 42 gulls."
    prompt = (await client.post("/tokenize", json={"prompt": text})).json()  # vLLM: special tokens by default
    content = (await client.post("/tokenize", json={"content": text})).json()  # llama-server: none by default
    completion = await client.post("/v1/completions", json={"model": "smollm2", "prompt": text, "max_tokens": 1})
    assert prompt["count"] == completion.json()["usage"]["prompt_tokens"]
    assert (
        content["tokens"]
        == (await client.post("/tokenize", json={"prompt": text, "add_special_tokens": False})).json()["tokens"]
    )
    back = (await client.post("/detokenize", json={"tokens": content["tokens"]})).json()
    assert back == {"prompt": text, "content": text}
    assert_error(await client.post("/detokenize", json={"tokens": [10**7]}), 400, param="tokens")


@pytest.mark.model
async def test_the_documented_examples_answer_on_smollm2(client, smollm2):
    """The docs' examples name SmolLM2's own ids; the echo live server cannot check that."""
    paths = (await client.get("/v1/openapi.json")).json()["paths"]

    def examples(path):
        content = paths[path]["post"]["requestBody"]["content"]["application/json"]
        return [example["value"] for example in content["examples"].values()]

    for body in examples("/tokenize"):
        response = await client.post("/tokenize", json=body)
        assert response.status_code == 200 and response.json()["count"] > 0, response.text
    (detokenize,) = examples("/detokenize")
    assert (await client.post("/detokenize", json=detokenize)).json()["content"] == "Hello, sea."
