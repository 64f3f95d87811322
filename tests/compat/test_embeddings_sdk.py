"""The openai SDK's embeddings against the platform started as the README says (smollm2-embed)."""

import math

import httpx
import pytest

pytestmark = [pytest.mark.live, pytest.mark.model]

MODEL = "smollm2-embed"  # registered by the first-run setup on the bundled GGUF
TEXTS = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly tax filing deadlines"]


def test_default_encoding_and_float_give_the_same_vectors(sdk):
    by_default = sdk.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64 and decodes it
    as_floats = sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert by_default.model == MODEL and [d.index for d in by_default.data] == [0, 1, 2]
    assert by_default.usage.prompt_tokens == as_floats.usage.prompt_tokens > len(TEXTS)
    assert by_default.usage.total_tokens == by_default.usage.prompt_tokens
    for packed, floats in zip(by_default.data, as_floats.data, strict=True):
        assert len(packed.embedding) == len(floats.embedding) == 576
        assert packed.embedding == pytest.approx(floats.embedding, abs=1e-6)  # float32 on the wire
        assert math.isclose(math.sqrt(sum(x * x for x in floats.embedding)), 1.0, rel_tol=1e-5)
    cat, kitten, tax = (d.embedding for d in as_floats.data)
    assert sum(a * b for a, b in zip(cat, kitten)) > sum(a * b for a, b in zip(cat, tax))


def test_token_arrays_and_dimensions(sdk, live):
    ids = httpx.post(
        f"{live.base_url}/tokenize",
        json={"model": MODEL, "prompt": TEXTS[0]},
        headers={"Authorization": f"Bearer {live.api_key}"},
        timeout=60,
    ).json()["tokens"]
    by_ids = sdk.embeddings.create(model=MODEL, input=[ids], encoding_format="float", dimensions=576)
    by_text = sdk.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert by_ids.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-5)


def test_sdk_errors_name_the_parameter(sdk):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=MODEL, input="sea", dimensions=64)
    assert caught.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="smollm2", input="sea")  # a generation model
    assert caught.value.body["param"] == "model"
