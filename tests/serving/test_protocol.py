"""The wire protocol between web processes and workers carries every field of a chunk and a job."""

import json

from engines.base import Chunk, GenerationRequest, ModelSpec, SamplingParams, TokenLogprob, TopLogprob
from serving import protocol


def through_json(data):
    return json.loads(json.dumps(data))


def test_a_chunk_with_logprobs_and_a_choice_index_round_trips():
    entry = TokenLogprob(
        token=" caf\ufffd",
        logprob=-0.25,
        bytes=(32, 99, 97, 102, 195),
        top=(
            TopLogprob(token=" caf\ufffd", logprob=-0.25, bytes=(32, 99, 97, 102, 195)),
            TopLogprob(token=" tea", logprob=-1.5, bytes=(32, 116, 101, 97)),
        ),
    )
    chunks = [
        Chunk(text=" caf", token_ids=(7, 8), index=2, logprobs=(entry, entry)),
        Chunk(
            text="",
            finish_reason="length",
            prompt_tokens=9,
            completion_tokens=12,
            cached_tokens=3,
            index=1,
            finish_reasons=("stop", "length", "length"),
        ),
        Chunk(text="plain", token_ids=(1,)),
        Chunk(finish_reason="stop", prompt_tokens=4, completion_tokens=2, stop_sequence="\n\nUser:"),
    ]
    for chunk in chunks:
        assert protocol.chunk_from_dict(through_json(protocol.chunk_to_dict(chunk))) == chunk
    # A plain token of choice 0 stays as small as before.
    assert protocol.chunk_to_dict(chunks[2]) == {"text": "plain", "ids": [1]}


def test_a_job_carries_n_logprobs_and_logit_bias():
    sampling = SamplingParams(
        max_tokens=5, stop=("x",), n=3, logprobs=True, top_logprobs=4, logit_bias=((17, -100.0), (42, 2.5))
    )
    request = GenerationRequest(request_id="r1", sampling=sampling, prompt="hi")
    message = protocol.job_message(
        engine="llama_cpp",
        spec=ModelSpec(name="m", source="s"),
        request=request,
        reply_channel="c",
        submitted_at=0.0,
        record={},
    )
    _, _, back = protocol.job_from_message(through_json(message))
    assert back.sampling == sampling


def _through_the_wire(request: GenerationRequest, spec: ModelSpec):
    message = protocol.job_message(
        engine="llama_cpp", spec=spec, request=request, reply_channel="c", submitted_at=0.0, record={}
    )
    return message, protocol.job_from_message(through_json(message))


def test_embed_and_tokenize_jobs_and_an_embed_models_spec_round_trip():
    spec = ModelSpec(name="vectors", source="s", context_length=512, task="embed")
    embed = GenerationRequest(
        request_id="e", sampling=SamplingParams(), task="embed", inputs=("text", (1, 2, 3)), dimensions=576
    )
    _, (_, spec_back, back) = _through_the_wire(embed, spec)
    assert (spec_back, back) == (spec, embed)
    tokenize = GenerationRequest(
        request_id="t",
        sampling=SamplingParams(),
        task="tokenize",
        messages=({"role": "user", "content": "hi"},),
        add_generation_prompt=False,
    )
    assert _through_the_wire(tokenize, spec)[1][2] == tokenize
    detokenize = GenerationRequest(request_id="d", sampling=SamplingParams(), task="detokenize", token_ids=(5, 6))
    assert _through_the_wire(detokenize, spec)[1][2] == detokenize
    vector = Chunk(index=3, embedding=(0.25, -0.5))
    assert protocol.chunk_from_dict(through_json(protocol.chunk_to_dict(vector))) == vector


def test_a_generate_models_spec_leaves_task_off_the_wire():
    """Workers of the version before tasks build ModelSpec(**spec): an unknown key would fail them."""
    request = GenerationRequest(request_id="g", sampling=SamplingParams(), prompt="hi")
    message, (_, spec, _) = _through_the_wire(request, ModelSpec(name="m", source="s"))
    assert "task" not in message["spec"] and spec.task == "generate"
    assert "add_generation_prompt" not in message and "dimensions" not in message
