"""Tools on the llama.cpp engine with the real SmolLM2 GGUF: prompts, parsed and forced calls."""

import json

import jsonschema
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from engines.base import GenerationRequest, ModelSpec, SamplingParams, ToolSpec
from engines.errors import UnsupportedParameterError
from engines.llama_cpp import LlamaCppEngine
from engines.tool_calls import forced_tool_format
from engines.tool_prompt import chat_input, template_reads_tools
from tests.engines.helpers import collect, loaded

pytestmark = pytest.mark.model

WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
)
ASK = ({"role": "user", "content": "What is the weather like in Paris today?"},)
HISTORY = (
    *ASK,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
)


def tools_request(tool_choice="auto", *, messages=ASK, seed=0, temperature=0.0, max_tokens=120):
    return GenerationRequest(
        request_id="t",
        sampling=SamplingParams(temperature=temperature, seed=seed, max_tokens=max_tokens),
        messages=messages,
        tools=(WEATHER,),
        tool_choice=tool_choice,
        forced_tool="get_weather" if tool_choice == "function" else None,
    )


@pytest.fixture(scope="module")
def engine(gguf_path):
    with loaded(LlamaCppEngine(ModelSpec(name="smollm2", source=gguf_path, context_length=1024))) as engine:
        yield engine


def rendered(engine, request) -> str:
    chat = chat_input(request, template=engine._formatter.template)
    return engine.render_chat(chat.messages, chat.tools)[0]


def test_smollm2_gets_the_generic_tool_prompt_and_readable_history(engine):
    assert not template_reads_tools(engine._formatter.template)  # plain ChatML
    prompt = rendered(engine, tools_request(messages=HISTORY))
    assert prompt.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in prompt
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<|im_start|>user\n<tool_response>\n18 C and sunny\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_llama_cpp_python_passes_tools_to_a_template_that_reads_them(engine):
    template = "{% for tool in tools %}[{{ tool.function.name }}]{% endfor %}{{ messages[0].content }}"
    formatter = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
    chat = chat_input(tools_request(), template=template)
    assert formatter(messages=chat.messages, tools=chat.tools).prompt == "[get_weather]" + ASK[0]["content"]


def test_the_engine_asks_the_sampler_for_the_forced_call_format(engine):
    forced = tools_request("function")
    assert engine._output_format(forced) == forced_tool_format(forced)
    assert engine._output_format(tools_request("auto")) is None


@pytest.mark.parametrize("seed", range(3))
async def test_forced_calls_always_validate_against_the_parameters(engine, seed):
    for choice in ("required", "function"):
        chunks = await collect(engine, tools_request(choice, seed=seed, temperature=1.0, max_tokens=150))
        deltas = [d for c in chunks for d in c.tool_calls]
        assert chunks[-1].finish_reason == "tool_calls", "".join(c.text for c in chunks)
        assert "".join(c.text for c in chunks) == ""
        first, *fragments = deltas
        assert first.id.startswith("call_") and first.name == "get_weather" and first.arguments == ""
        assert fragments and all(d.call == 0 and d.id is None for d in fragments)
        jsonschema.validate(json.loads("".join(d.arguments for d in fragments)), WEATHER.parameters)


async def test_a_forced_call_whose_parameters_cannot_be_enforced_is_refused_naming_tools(engine):
    bounded = ToolSpec(
        name="set_volume",
        parameters={"type": "object", "properties": {"level": {"type": "integer", "minimum": 0}}},
    )
    request = GenerationRequest(
        request_id="t",
        sampling=SamplingParams(temperature=0.0, max_tokens=16),
        messages=ASK,
        tools=(bounded,),
        tool_choice="required",
    )
    with pytest.raises(UnsupportedParameterError) as caught:
        await collect(engine, request)
    assert caught.value.param == "tools" and "minimum" in str(caught.value)
