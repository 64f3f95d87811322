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
