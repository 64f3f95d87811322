"""Tool calls out of generated text (engines.tool_calls) and tools into prompts (engines.tool_prompt)."""

import json

import jsonschema
import pytest

from engines.base import Chunk, GenerationRequest, ModelSpec, SamplingParams, ToolSpec
from engines.echo import EchoEngine
from engines.errors import UnsupportedParameterError
from engines.tool_calls import (
    ForcedCallParser,
    TaggedCallParser,
    forced_tool_format,
    parsed_tool_calls,
)
from engines.tool_prompt import (
    GENERIC_HOW_TO_CALL,
    chat_input,
    template_reads_tools,
)
from serving.outcome import OutcomeBuilder
from tests.engines.helpers import collect

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
)
TIME = ToolSpec(name="get_time", parameters={"type": "object", "properties": {"zone": {"type": "string"}}})
NAMES = frozenset({"get_weather", "get_time"})
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def request(tool_choice="auto", forced_tool=None, *, tools=(WEATHER, TIME), messages=None, n=1, **fields):
    return GenerationRequest(
        request_id="t",
        sampling=SamplingParams(n=n),
        messages=tuple(messages or [{"role": "user", "content": "Weather in Paris?"}]),
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced_tool,
        **fields,
    )


def run(parser, pieces):
    """Feed `pieces` one by one; the text and calls that came out, and per piece what was sent."""
    texts, deltas, sent = [], [], []
    for piece in pieces:
        text, calls = parser.feed(piece)
        texts.append(text)
        deltas.extend(calls)
        sent.append((text, calls))
    text, calls = parser.finish()
    texts.append(text)
    deltas.extend(calls)
    return "".join(texts), deltas, sent


def assembled(deltas):
    """Calls as a client puts them together from their pieces: {index: [id, name, arguments]}."""
    calls = {}
    for delta in deltas:
        call = calls.setdefault(delta.call, [None, None, ""])
        if delta.id is not None:
            call[0], call[1] = delta.id, delta.name
        call[2] += delta.arguments
    return calls


# --- "auto": tagged blocks ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_tagged_call_split_anywhere_is_one_call_and_the_text_around_it_stays(size):
    output = f"Let me look.\n<tool_call>\n{CALL}\n</tool_call>\nDone."
    pieces = [output[i : i + size] for i in range(0, len(output), size)]
    text, deltas, _ = run(TaggedCallParser(NAMES), pieces)
    assert text == "Let me look.\n\nDone."
    ((call_id, name, arguments),) = assembled(deltas).values()
    assert call_id.startswith("call_") and name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris"}


def test_text_that_only_looks_like_a_tag_start_is_held_then_released():
    parser = TaggedCallParser(NAMES)
    assert parser.feed("a <tool") == ("a ", [])  # "<tool" may begin "<tool_call>"
    assert parser.feed("s> b") == ("<tools> b", [])
    assert parser.finish() == ("", [])
    assert parser.calls == 0


def test_several_calls_are_numbered_in_order():
    output = f"<tool_call>{CALL}</tool_call><tool_call>" + '{"name": "get_time", "arguments": {}}</tool_call>'
    _, deltas, _ = run(TaggedCallParser(NAMES), [output])
    calls = assembled(deltas)
    assert [calls[0][1], calls[1][1]] == ["get_weather", "get_time"]
    assert calls[0][0] != calls[1][0]
    assert json.loads(calls[1][2]) == {}


def test_parallel_false_keeps_the_first_call_only():
    output = f"<tool_call>{CALL}</tool_call><tool_call>" + '{"name": "get_time", "arguments": {}}</tool_call>'
    parser = TaggedCallParser(NAMES, parallel=False)
    _, deltas, _ = run(parser, [output])
    assert [c[1] for c in assembled(deltas).values()] == ["get_weather"]
    assert parser.calls == 1


@pytest.mark.parametrize(
    "block",
    [
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',  # not one of the tools
        '<tool_call>{"name": "get_weather", "arguments": [1, 2]}</tool_call>',  # arguments not an object
        "<tool_call>[]</tool_call>",
    ],
)
def test_a_block_that_is_not_a_call_to_a_tool_stays_text(block):
    parser = TaggedCallParser(NAMES)
    text, deltas, _ = run(parser, ["Hi ", block, " bye"])
    assert text == f"Hi {block} bye"
    assert deltas == [] and parser.calls == 0


def test_arguments_as_a_json_string_and_llama_style_parameters_are_read():
    as_string = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>'
    as_parameters = '<tool_call>{"name": "get_weather", "parameters": {"city": "Rome"}}</tool_call>'
    for output, city in ((as_string, "Oslo"), (as_parameters, "Rome")):
        _, deltas, _ = run(TaggedCallParser(NAMES), [output])
        assert json.loads(assembled(deltas)[0][2]) == {"city": city}


def test_a_block_the_model_never_closed_is_still_a_call_if_complete():
    text, deltas, _ = run(TaggedCallParser(NAMES), ["<tool_call>\n", CALL, "\n"])
    assert text == "" and assembled(deltas)[0][1] == "get_weather"
    text, deltas, _ = run(TaggedCallParser(NAMES), ["<tool_call>\n", CALL[:20]])
    assert text == "<tool_call>\n" + CALL[:20] and deltas == []


def test_an_answer_that_is_one_bare_json_call_is_a_call():
    pieces = ["  ", CALL[:10], CALL[10:30], CALL[30:], "\n"]
    text, deltas, sent = run(TaggedCallParser(NAMES), pieces)
    assert text == "" and assembled(deltas)[0][1] == "get_weather"
    assert all(piece == ("", []) for piece in sent)  # held until the end: the whole answer must be the call


def test_json_followed_by_more_text_is_text_as_soon_as_that_is_clear():
    parser = TaggedCallParser(NAMES)
    assert parser.feed(CALL) == ("", [])
    assert parser.feed(" is how I would call it.") == (CALL + " is how I would call it.", [])
    assert parser.finish() == ("", []) and parser.calls == 0


def test_a_bare_json_object_that_is_no_call_is_text():
    text, deltas, _ = run(TaggedCallParser(NAMES), ['{"answer": 42}'])
    assert text == '{"answer": 42}' and deltas == []


# --- forced calls --------------------------------------------------------------------------------


def test_a_forced_call_streams_its_name_first_then_its_arguments_in_fragments():
    output = '{ "name" : "get_weather", "arguments": {"city": "Pa}{ris \\" x", "unit": "c", "n": [1, {"a": 2}]} }'
    parser = ForcedCallParser()
    text, deltas, sent = run(parser, list(output))  # one character at a time
    assert text == ""
    name_at = output.index('"get_weather"') + len('"get_weather"') - 1
    first = next(i for i, (_, calls) in enumerate(sent) if calls)
    assert first == name_at, "the name goes out as soon as its closing quote arrives"
    assert sent[first][1][0].name == "get_weather" and sent[first][1][0].id.startswith("call_")
    argument_pieces = [d.arguments for d in deltas[1:]]
    assert len(argument_pieces) > 10 and all(d.id is None for d in deltas[1:])
    arguments = "".join(argument_pieces)
    assert json.loads(arguments) == {"city": 'Pa}{ris " x', "unit": "c", "n": [1, {"a": 2}]}
    assert not arguments.endswith("} }"), "the call's own closing brace is not part of the arguments"
    assert parser.calls == 1


def test_forced_output_that_is_not_a_call_stays_text():
    text, deltas, _ = run(ForcedCallParser(), ["I cannot", " do that."])
    assert text == "I cannot do that." and deltas == []


def test_forced_schema_admits_exactly_calls_to_the_forced_functions():
    named = forced_tool_format(request("function", "get_weather"))
    assert named.kind == "json_schema"
    assert list(named.schema["properties"]) == ["name", "arguments"], "name first, for streaming"
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Paris"}}, named.schema)
    for wrong in (
        {"name": "get_time", "arguments": {}},
        {"name": "get_weather", "arguments": {}},  # city is required by the parameters
        {"name": "get_weather", "arguments": {"city": "Paris"}, "more": 1},
        {"arguments": {"city": "Paris"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, named.schema)
    required = forced_tool_format(request("required"))
    for call in ({"name": "get_weather", "arguments": {"city": "x"}}, {"name": "get_time", "arguments": {}}):
        jsonschema.validate(call, required.schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {"city": 3}}, required.schema)


def test_forced_schema_keeps_parameter_definitions_reachable():
    """Pydantic (and so LangChain) parameters put nested models in $defs, referenced from the root."""

    def with_defs(name):
        return ToolSpec(
            name=name,
            parameters={
                "type": "object",
                "properties": {"where": {"$ref": "#/$defs/Place"}},
                "required": ["where"],
                "$defs": {
                    "Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
                },
            },
        )

    for tools in ((with_defs("a"),), (with_defs("a"), with_defs("b"))):
        schema = forced_tool_format(request("required", tools=tools)).schema
        jsonschema.validate({"name": "a", "arguments": {"where": {"city": "Oslo"}}}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"name": "a", "arguments": {"where": {"town": "Oslo"}}}, schema)


# --- the stream of chunks --------------------------------------------------------------------------


async def chunks_of(*chunks):
    for chunk in chunks:
        yield chunk


async def test_the_stream_ends_with_tool_calls_and_keeps_token_ids():
    pieces = ["Sure. <tool", "_call>", CALL[:15], CALL[15:], "</tool_call>"]
    source = [Chunk(text=p, token_ids=(i,)) for i, p in enumerate(pieces)]
    source.append(Chunk(finish_reason="stop", prompt_tokens=5, completion_tokens=5))
    out = [c async for c in parsed_tool_calls(chunks_of(*source), request())]
    assert [c.token_ids for c in out[:-1]] == [(i,) for i in range(5)]
    assert out[-1].finish_reason == "tool_calls" and out[-1].completion_tokens == 5
    builder = OutcomeBuilder()
    for chunk in out:
        builder.add(chunk)
    (choice,) = builder.outcome().choices
    assert choice.text == "Sure. " and choice.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in choice.tool_calls] == [("get_weather", {"city": "Paris"})]


async def test_length_stays_length_and_a_choice_without_calls_keeps_its_reason():
    source = [
        Chunk(text=f"<tool_call>{CALL}</tool_call>", index=0),
        Chunk(text="plain <tool_c", index=1),  # held back, released at the end
        Chunk(finish_reason="stop", finish_reasons=("stop", "stop"), index=1),
    ]
    out = [c async for c in parsed_tool_calls(chunks_of(*source), request(n=2))]
    assert out[-1].finish_reasons == ("tool_calls", "stop") and out[-1].finish_reason == "tool_calls"
    assert "".join(c.text for c in out if c.index == 1) == "plain <tool_c"
    cut = [Chunk(text='{"name": "get_weather", "arguments": {"ci'), Chunk(finish_reason="length")]
    out = [c async for c in parsed_tool_calls(chunks_of(*cut), request("function", "get_weather"))]
    assert out[-1].finish_reason == "length"
    assert assembled([d for c in out for d in c.tool_calls])[0][1:] == ["get_weather", '{"ci']


async def test_echo_returns_a_call_written_in_its_text_and_refuses_to_force_one():
    engine = EchoEngine(ModelSpec(name="echo", source=""))
    engine.load()
    said = f"Calling. <tool_call>{CALL}</tool_call>"
    chunks = await collect(engine, request(messages=[{"role": "user", "content": said}]))
    assert "".join(c.text for c in chunks) == "Calling. "
    assert chunks[-1].finish_reason == "tool_calls"
    assert assembled([d for c in chunks for d in c.tool_calls])[0][1] == "get_weather"
    # tool_choice "none": the same text is only text.
    chunks = await collect(engine, request("none", messages=[{"role": "user", "content": said}]))
    assert "".join(c.text for c in chunks) == said and chunks[-1].finish_reason == "stop"
    with pytest.raises(UnsupportedParameterError) as refused:
        await collect(engine, request("required"))
    assert refused.value.param == "tool_choice"


# --- prompts ----------------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WITH_TOOLS = (
    "{% if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}"
    "{% for message in messages %}{{ message.content }}{% endfor %}"
)
HISTORY = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24 C"},
]


def test_templates_that_read_tools_are_told_apart():
    assert template_reads_tools(WITH_TOOLS)
    assert not template_reads_tools(CHATML)
    assert not template_reads_tools("{% set tools = [] %}{{ tools }}")  # its own variable, not the caller's


def test_the_generic_prompt_offers_the_tools_in_the_system_message():
    ready = chat_input(request(messages=[{"role": "system", "content": "Be brief."}, *HISTORY[:1]]), template=CHATML)
    assert ready.tools is None
    system = ready.messages[0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n# Tools")
    assert GENERIC_HOW_TO_CALL in system["content"] and '"name": "get_weather"' in system["content"]
    alone = chat_input(request(), template=CHATML).messages
    assert alone[0]["role"] == "system" and alone[1] == {"role": "user", "content": "Weather in Paris?"}
    forced = chat_input(request("function", "get_time"), template=CHATML).messages[0]["content"]
    assert "You must call the function `get_time`" in forced and GENERIC_HOW_TO_CALL not in forced


def test_tool_history_becomes_text_a_plain_template_can_show():
    ready = chat_input(request("none", messages=HISTORY), template=CHATML).messages
    assert [m["role"] for m in ready] == ["user", "assistant", "user"]  # "none": no tools offered
    assert ready[1]["content"].count("<tool_call>") == 2 and '"arguments": {"city": "Rome"}' in ready[1]["content"]
    assert ready[2]["content"] == "<tool_response>\n18 C\n</tool_response>\n<tool_response>\n24 C\n</tool_response>"
    assert all(set(m) == {"role", "content"} for m in ready)


def test_a_template_that_reads_tools_gets_them_and_the_calls_as_objects():
    ready = chat_input(request(messages=HISTORY), template=WITH_TOOLS)
    assert [t["function"]["name"] for t in ready.tools] == ["get_weather", "get_time"]
    assert ready.messages[1]["tool_calls"][1]["function"]["arguments"] == {"city": "Rome"}
    assert ready.messages[2] == HISTORY[2]
    assert chat_input(request("none", messages=HISTORY), template=WITH_TOOLS).tools is None
