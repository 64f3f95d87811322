"""Output formats as GBNF (engines.llama_grammar), and grammar-constrained sampling in the
llama.cpp engine on the real SmolLM2 GGUF."""

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.base import GenerationRequest, ModelSpec, OutputFormat, SamplingParams
from engines.errors import InvalidInputError, UnsupportedParameterError
from engines.llama_cpp import LlamaCppEngine
from engines.llama_grammar import enforceable_schema, grammar_for, schema_grammar
from engines.llama_sampling import grammar_samplers
from tests.engines.helpers import collect, loaded, text_of

# What the openai SDK sends for a Pydantic model (`to_strict_json_schema`): $defs and $ref,
# additionalProperties false, every property required, nullable anyOf, enums, lists.
PYDANTIC_STRICT = {
    "$defs": {
        "Color": {"enum": ["red", "green", "blue"], "title": "Color", "type": "string"},
        "Pet": {
            "properties": {
                "name": {"title": "Name", "type": "string", "maxLength": 12},
                "color": {"$ref": "#/$defs/Color"},
            },
            "required": ["name", "color"],
            "title": "Pet",
            "type": "object",
            "additionalProperties": False,
        },
    },
    "properties": {
        "owner": {"title": "Owner", "type": "string", "maxLength": 12},
        "age": {"anyOf": [{"type": "integer"}, {"type": "null"}], "title": "Age"},
        "pets": {"items": {"$ref": "#/$defs/Pet"}, "title": "Pets", "type": "array", "maxItems": 2},
        "ok": {"type": "boolean", "description": "whether all is well"},
    },
    "required": ["owner", "age", "pets", "ok"],
    "title": "Household",
    "type": "object",
    "additionalProperties": False,
}


def test_pydantic_strict_schema_becomes_a_grammar_without_annotations():
    grammar = schema_grammar(PYDANTIC_STRICT)
    assert "root ::=" in grammar
    assert '\\"owner\\"' in grammar and "Color" in grammar
    cleaned = enforceable_schema(PYDANTIC_STRICT)
    assert "title" not in cleaned and "title" not in cleaned["$defs"]["Pet"]
    assert "description" not in cleaned["properties"]["ok"]
    assert cleaned["properties"]["owner"] == {"type": "string", "maxLength": 12}
    assert "title" not in PYDANTIC_STRICT["$defs"]["Pet"]["properties"] and "title" in PYDANTIC_STRICT  # not mutated


def test_json_object_is_any_object_and_strings_exclude_control_characters():
    grammar = grammar_for(OutputFormat(kind="json_object"))
    assert 'root ::= "{"' in grammar or "root ::= object" in grammar
    # The converter's own char rule would let a raw newline into a string, which JSON forbids.
    assert "\\x00-\\x1F" in grammar


def test_raw_grammar_passes_through_and_an_empty_one_is_refused():
    assert grammar_for(OutputFormat(kind="grammar", grammar='root ::= "yes"')) == 'root ::= "yes"'
    with pytest.raises(InvalidInputError) as error:
        grammar_for(OutputFormat(kind="grammar", grammar="  "))
    assert error.value.param == "grammar"


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not'"),
        ({"type": "integer", "minimum": 0}, "'minimum'"),
        ({"type": "number", "multipleOf": 2}, "'multipleOf'"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "'patternProperties'"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "dependentRequired": {"a": ["b"]}},
            "'dependentRequired'",
        ),
        ({"if": {"type": "string"}, "then": {"maxLength": 3}}, "'if'"),
        ({"allOf": [{"type": "string"}]}, "'allOf'"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "'oneOf'"),
        ({"type": "string", "format": "email"}, "'email'"),
        ({"$ref": "https://example.com/schema.json"}, "'$ref' outside"),
        ({"type": "object", "minProperties": 1}, "'minProperties'"),
        ({"type": ["string", "null"], "maxLength": 3}, "'maxLength'"),
        ({"type": "string", "pattern": "^\\d+$"}, "'pattern'"),
        ({"type": "string", "pattern": "abc"}, "not anchored"),
        ({"enum": ['say "hi"']}, "quotes"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "'b'"),
        ({"type": "string", "maxLength": 100_000}, "above"),
        ({"type": "object", "properties": {"a": True}}, "boolean schemas"),
        ({"type": "object", "nullable": True, "properties": {}}, "'nullable'"),
    ],
)
def test_keywords_that_cannot_be_enforced_are_refused_by_name(schema, named):
    with pytest.raises(UnsupportedParameterError) as error:
        schema_grammar(schema)
    assert error.value.param == "response_format"
    assert named in str(error.value)


@pytest.mark.parametrize(
    "schema",
    [
        "not an object",
        {"type": "strange"},
        {"$ref": "#/$defs/Missing"},
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"type": "array", "items": {"type": "string"}, "minItems": -1},
        {"enum": []},
    ],
)
def test_schemas_that_are_not_schemas_are_invalid_input(schema):
    with pytest.raises(InvalidInputError) as error:
        enforceable_schema(schema)
    assert error.value.param == "response_format"


def test_supported_keywords_convert():
    for schema in [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "uuid"},
        {"type": "string", "pattern": "^[a-z]{2,4}(-[0-9]+)?$"},
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": ["string", "null"]},
        {"const": 3},
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                }
            },
            "$ref": "#/$defs/Node",
        },
    ]:
        assert "root ::=" in schema_grammar(schema)


# --- In the engine, on the real model ---------------------------------------------------------


@pytest.fixture(scope="module")
def engine(gguf_path):
    spec = ModelSpec(name="smollm2-grammar", source=gguf_path, context_length=1024, options={"parallel": 4, "nice": 0})
    with loaded(LlamaCppEngine(spec)) as engine:
        yield engine


def structured(output_format: OutputFormat, *, n: int = 1, max_tokens: int = 160, **sampling) -> GenerationRequest:
    return GenerationRequest(
        request_id="g",
        messages=({"role": "user", "content": "Describe a household with pets as JSON."},),
        sampling=SamplingParams(**{"temperature": 0.8, "seed": 3, "max_tokens": max_tokens, "n": n, **sampling}),
        output_format=output_format,
    )


def texts_by_choice(chunks) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
    return texts


@pytest.mark.model
async def test_schema_output_validates_for_every_choice(engine):
    chunks = await collect(engine, structured(OutputFormat(kind="json_schema", schema=PYDANTIC_STRICT), n=2))
    final = chunks[-1]
    assert final.finish_reasons == ("stop", "stop")
    texts = texts_by_choice(chunks)
    assert sorted(texts) == [0, 1]
    for text in texts.values():
        jsonschema.validate(json.loads(text), PYDANTIC_STRICT)


@pytest.mark.model
async def test_json_object_output_is_an_object(engine):
    request = structured(OutputFormat(kind="json_object"), max_tokens=60)
    chunks = await collect(engine, request)
    text = text_of(chunks)
    assert text.startswith("{"), text
    if chunks[-1].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # the budget ran out inside the object: OpenAI's behaviour too, finish_reason "length"
        assert chunks[-1].finish_reason == "length"


@pytest.mark.model
async def test_raw_grammar_is_followed(engine):
    grammar = 'root ::= ("yes" | "no") "." '
    chunks = await collect(engine, structured(OutputFormat(kind="grammar", grammar=grammar), temperature=1.5))
    assert text_of(chunks) in ("yes.", "no.")
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.model
@pytest.mark.parametrize(
    "grammar", ['root ::= "unterminated', "root ::= undefined-rule", 'answer ::= "no root"', 'root ::= root "x"']
)
async def test_grammar_llama_cpp_cannot_parse_is_invalid_input_naming_grammar(engine, grammar):
    with pytest.raises(InvalidInputError) as error:
        await collect(engine, structured(OutputFormat(kind="grammar", grammar=grammar)))
    assert error.value.param == "grammar"
    # The engine is still fine afterwards.
    chunks = await collect(engine, structured(OutputFormat(kind="grammar", grammar='root ::= "ok"')))
    assert text_of(chunks) == "ok"


@pytest.mark.model
async def test_unsupported_keyword_is_refused_before_generation(engine):
    steps = engine._scheduler.steps
    with pytest.raises(UnsupportedParameterError) as error:
        await collect(engine, structured(OutputFormat(kind="json_schema", schema={"type": "integer", "maximum": 9})))
    assert "'maximum'" in str(error.value)
    assert engine._scheduler.steps == steps


@pytest.mark.model
async def test_length_limit_cuts_json_short_with_finish_reason_length(engine):
    chunks = await collect(engine, structured(OutputFormat(kind="json_schema", schema=PYDANTIC_STRICT), max_tokens=4))
    assert chunks[-1].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(chunks))


GBNF_PIECES = [
    "root",
    " ::= ",
    '"',
    "'",
    "[",
    "]",
    "[^",
    "(",
    ")",
    "|",
    "*",
    "+",
    "?",
    "{",
    "}",
    "{2,",
    "\\",
    "\\x",
    "\\u",
    "-",
    "a",
    "9",
    " ",
    "\n",
    "#",
    "::=",
    "rule",
    "é",
    "\x00",
    "\ud800",
]


@pytest.mark.model
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    text=st.one_of(
        st.lists(st.sampled_from(GBNF_PIECES), max_size=24).map("".join),
        st.text(max_size=40).map(lambda rest: "root ::= " + rest),
    )
)
def test_any_grammar_text_compiles_or_is_invalid_input(engine, text):
    """llama.cpp's GBNF parser, fuzzed: a grammar either compiles or is a 400 naming `grammar`."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(engine._llama._model.model)
    try:
        samplers = grammar_samplers(vocab, text, 2, param="grammar")
    except InvalidInputError as error:
        assert error.param == "grammar"
    else:
        assert len(samplers) == 2
        for sampler in samplers:
            sampler.free()
