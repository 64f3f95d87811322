"""Validation of OpenAI request bodies. Unknown fields are rejected, as OpenAI does.

These serializers are also the request bodies' OpenAPI schema (api/openai/schema.py); a field
that takes several shapes says which with `extend_schema_field`, beside the code that parses it.
"""

import json
import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from serving.errors import UnsupportedParameter

ROLES = ("system", "developer", "user", "assistant", "tool")
# A field name that an error may name back as its `param`: what a real client could mean.
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Part types OpenAI defines; only these are named back in an error, never a client's own string.
_KNOWN_PART_TYPES = ("image_url", "input_audio", "file", "refusal")


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know instead of silently ignoring them."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            name = unknown[0]
            if _FIELD_NAME.fullmatch(name):
                raise serializers.ValidationError({name: ["Unrecognized request argument supplied."]})
            # Any other name is not repeated: it could be anything, and errors are recorded.
            raise serializers.ValidationError(
                {"non_field_errors": ["Unrecognized request argument supplied (its name is not shown)."]}
            )
        return super().to_internal_value(data)


MAX_STOP_SEQUENCES = 4


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES},
        ],
        "description": "Up to 4 sequences where generation stops; the answer does not contain them.",
    }
)
class StopField(serializers.Field):
    """`stop`: a string or a list of up to 4 strings; normalised to a tuple."""

    def to_internal_value(self, data):
        if data is None:
            return ()
        if isinstance(data, str):
            return (data,) if data else ()
        if isinstance(data, list) and all(isinstance(s, str) for s in data):
            if len(data) > MAX_STOP_SEQUENCES:
                raise serializers.ValidationError("At most 4 stop sequences are allowed.")
            return tuple(s for s in data if s)
        raise serializers.ValidationError("Must be a string or a list of strings.")

    def to_representation(self, value):
        return list(value)


MAX_BIASED_TOKENS = 1024


@extend_schema_field(
    {
        "type": "object",
        "propertyNames": {"pattern": "^[0-9]{1,9}$"},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        "maxProperties": MAX_BIASED_TOKENS,
        "description": "Token ids (of the model's vocabulary) to a bias added to their logits before "
        "sampling; -100 bans a token. 400 unsupported_parameter on engines without it.",
    }
)
class LogitBiasField(serializers.Field):
    """`logit_bias`: token ids (as JSON object keys) to a bias from -100 to 100; normalised to
    sorted (id, bias) pairs. Whether each id is in the model's vocabulary is the engine's check."""

    MAX_ENTRIES = MAX_BIASED_TOKENS

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object mapping token ids to biases.")
        if len(data) > self.MAX_ENTRIES:
            raise serializers.ValidationError(f"At most {self.MAX_ENTRIES} token ids may be biased.")
        pairs = []
        for key, bias in data.items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9):
                raise serializers.ValidationError("Keys must be token ids: non-negative integers, as strings.")
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
                raise serializers.ValidationError("Each bias must be a number from -100 to 100.")
            pairs.append((int(key), float(bias)))
        return tuple(sorted(pairs))

    def to_representation(self, value):
        return {str(token): bias for token, bias in value}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
                    "required": ["type", "text"],
                },
            },
        ],
        "description": "A string, or a list of text parts (other part types get 400 unsupported_parameter).",
    }
)
class MessageContentField(serializers.Field):
    """Message content: a string, null, or a list of text parts; normalised to a string."""

    def __init__(self, **kwargs):
        super().__init__(required=False, allow_null=True, default="", **kwargs)

    def validate_empty_values(self, data):
        # DRF answers null itself without calling to_internal_value, so None would reach the
        # chat template. Null content is an assistant turn that only calls tools: no text.
        if data is None:
            return True, ""
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            texts = []
            for part in data:
                if not isinstance(part, dict) or "type" not in part:
                    raise serializers.ValidationError("Each content part must be an object with a 'type'.")
                if part["type"] != "text":
                    named = (
                        f"Content parts of type {part['type']!r} are"
                        if part["type"] in _KNOWN_PART_TYPES
                        else "This content part type is"
                    )
                    raise UnsupportedParameter(f"{named} not supported; only 'text' is.", param="messages")
                if not isinstance(part.get("text"), str):
                    raise serializers.ValidationError("A text part needs a string 'text'.")
                texts.append(part["text"])
            return "".join(texts)
        raise serializers.ValidationError("Must be a string, null or a list of content parts.")

    def to_representation(self, value):
        return value


# JSON fields that take several shapes; parsing is JSONField's, and the serializer's validate_* or
# the feature check (api/openai/requests.py) judges the value.


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
        ],
        "description": "One prompt: a string or a one-element list of strings. Batched and token-id "
        "prompts get 400 unsupported_parameter.",
    }
)
class PromptField(serializers.JSONField):
    pass


TOOL_CHOICES = ("none", "auto", "required")
_TOOL_CHOICE_ERROR = (
    'Must be "none", "auto", "required" or {"type": "function", "function": {"name": <one of the tools>}}.'
)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": list(TOOL_CHOICES)},
            {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                },
            },
        ],
        "description": "Whether the model may call tools (`auto`, the default with tools), must not (`none`), "
        "must call at least one (`required`), or must call the named function. `required` and a named "
        "function are grammar-forced: the arguments always validate against the function's parameters.",
    }
)
class ToolChoiceField(serializers.JSONField):
    """`tool_choice`: normalised to ("none" | "auto" | "required", None) or ("function", name)."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if isinstance(data, str) and data in TOOL_CHOICES:
            return (data, None)
        if (
            isinstance(data, dict)
            and data.get("type") == "function"
            and set(data) <= {"type", "function"}
            and isinstance(data.get("function"), dict)
            and set(data["function"]) == {"name"}
            and isinstance(data["function"]["name"], str)
        ):
            return ("function", data["function"]["name"])
        raise serializers.ValidationError(_TOOL_CHOICE_ERROR)

    def to_representation(self, value):
        choice, name = value
        return {"type": "function", "function": {"name": name}} if choice == "function" else choice


# A JSON schema's name, as OpenAI restricts it.
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
# GBNF text and JSON schemas beyond these sizes are refused: compiling them costs the engine.
MAX_GRAMMAR_CHARS = 65_536


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["type", "json_schema"],
                "properties": {
                    "type": {"const": "json_schema"},
                    "json_schema": {
                        "type": "object",
                        "required": ["name", "schema"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                            "description": {"type": "string"},
                            "schema": {"type": "object"},
                            "strict": {"type": ["boolean", "null"]},
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        ],
        "description": "`json_object`: the output is one JSON object. `json_schema`: it validates against "
        "`schema` (a keyword the engine cannot enforce is a 400 naming it, never ignored). Anything "
        "but `text` needs structured outputs: 400 unsupported_parameter on engines without them.",
    }
)
class ResponseFormatField(serializers.JSONField):
    """`response_format`, checked for OpenAI's shape; normalised to {"type", ["json_schema"]}."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not isinstance(data, dict) or data.get("type") not in RESPONSE_FORMAT_TYPES:
            raise serializers.ValidationError("Must be an object whose 'type' is text, json_object or json_schema.")
        kind = data["type"]
        extra = sorted(set(data) - {"type", "json_schema"} if kind == "json_schema" else set(data) - {"type"})
        if extra:
            raise serializers.ValidationError("Unrecognized field in response_format (only 'type' and 'json_schema').")
        if kind != "json_schema":
            return {"type": kind}
        spec = data.get("json_schema")
        if not isinstance(spec, dict):
            raise serializers.ValidationError("A json_schema response_format needs a 'json_schema' object.")
        if set(spec) - {"name", "description", "schema", "strict"}:
            raise serializers.ValidationError(
                "Unrecognized field in response_format.json_schema (name, description, schema, strict)."
            )
        if not isinstance(spec.get("name"), str) or not _SCHEMA_NAME.fullmatch(spec["name"]):
            raise serializers.ValidationError("json_schema.name must be 1 to 64 letters, digits, '_' or '-'.")
        if not isinstance(spec.get("schema"), dict):
            raise serializers.ValidationError("json_schema.schema must be a JSON schema (an object).")
        if not isinstance(spec.get("description", ""), str) or not isinstance(spec.get("strict"), (bool, type(None))):
            raise serializers.ValidationError("json_schema.description must be a string and strict a boolean.")
        if len(json.dumps(spec["schema"])) > MAX_GRAMMAR_CHARS:
            raise serializers.ValidationError(f"json_schema.schema is longer than {MAX_GRAMMAR_CHARS} characters.")
        return {"type": kind, "json_schema": spec}


FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # anchored: DRF searches
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


@extend_schema_field(
    {
        "type": "object",
        "description": "The arguments' JSON schema, an object schema (`type: object`); omitted or `{}` for "
        "a function without arguments.",
    }
)
class ParametersField(serializers.JSONField):
    """A function's `parameters`: a JSON schema of type object; `{}` means no arguments."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if data == {}:
            return dict(EMPTY_PARAMETERS)
        if not isinstance(data, dict) or data.get("type") != "object":
            raise serializers.ValidationError('Must be a JSON schema of an object: {"type": "object", ...}.')
        if not isinstance(data.get("properties", {}), dict):
            raise serializers.ValidationError("'properties' must be an object mapping names to schemas.")
        return data


class FunctionSerializer(StrictSerializer):
    name = serializers.RegexField(
        FUNCTION_NAME,
        max_length=64,
        error_messages={"invalid": "Must be 1 to 64 letters, digits, underscores or dashes."},
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    parameters = ParametersField(required=False, default=dict(EMPTY_PARAMETERS))
    strict = serializers.BooleanField(required=False, allow_null=True)


class ToolSerializer(StrictSerializer):
    """A function the model may call."""

    type = serializers.ChoiceField(choices=["function"], error_messages={"invalid_choice": 'Must be "function".'})
    function = FunctionSerializer()


class CalledFunctionSerializer(StrictSerializer):
    name = serializers.CharField(max_length=64)
    arguments = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="The arguments as JSON text.")


class AssistantToolCallSerializer(StrictSerializer):
    """A call an earlier assistant turn made, as the API returned it."""

    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"], error_messages={"invalid_choice": 'Must be "function".'})
    function = CalledFunctionSerializer()


class MessageSerializer(StrictSerializer):
    # The message never repeats the client's value: error messages are stored in records.
    role = serializers.ChoiceField(
        choices=ROLES, error_messages={"invalid_choice": f"Must be one of: {', '.join(ROLES)}."}
    )
    content = MessageContentField()
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = AssistantToolCallSerializer(many=True, required=False, help_text="Calls an assistant turn made.")
    tool_call_id = serializers.CharField(required=False, help_text="On a `tool` message: the call it answers.")

    def validate(self, attrs):
        role = attrs["role"]
        if attrs.get("tool_calls") and role != "assistant":
            raise serializers.ValidationError({"tool_calls": ["Only assistant messages carry tool_calls."]})
        if role == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError({"tool_call_id": ["A tool message needs the tool_call_id it answers."]})
        if attrs.get("tool_call_id") and role != "tool":
            raise serializers.ValidationError({"tool_call_id": ["Only tool messages carry a tool_call_id."]})
        return attrs


class StreamOptionsSerializer(StrictSerializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class SamplingFieldsSerializer(StrictSerializer):
    """Fields shared by chat and legacy completions."""

    model = serializers.CharField(max_length=256)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    stop = StopField(required=False, allow_null=True, default=())
    seed = serializers.IntegerField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False, allow_null=True)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    logit_bias = LogitBiasField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True)
    grammar = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=MAX_GRAMMAR_CHARS,
        trim_whitespace=False,
        help_text="llama-server's extension: a GBNF grammar (with a `root` rule) the output must follow. "
        "400 invalid_value if the engine cannot parse it; 400 unsupported_parameter on engines without it.",
    )

    def validate(self, attrs):
        if attrs.get("stream_options") and not attrs.get("stream"):
            raise serializers.ValidationError(
                {"stream_options": ["stream_options is only allowed when stream is true."]}
            )
        response_format = attrs.get("response_format")
        if attrs.get("grammar") is not None and response_format and response_format["type"] != "text":
            raise serializers.ValidationError({"grammar": ["grammar and response_format cannot be used together."]})
        return attrs


class ChatCompletionRequestSerializer(SamplingFieldsSerializer):
    messages = MessageSerializer(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)
    tools = ToolSerializer(many=True, required=False, allow_null=True)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    response_format = ResponseFormatField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False, allow_null=True)
    store = serializers.BooleanField(required=False, allow_null=True)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("max_completion_tokens") is not None:
            attrs["max_tokens"] = attrs["max_completion_tokens"]
        if attrs.get("top_logprobs") and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": ["top_logprobs requires logprobs to be true."]})
        _check_tools(attrs.get("tools") or [], attrs.get("tool_choice"))
        return attrs


def _check_tools(tools: list[dict], tool_choice: tuple[str, str | None] | None) -> None:
    """Function names are unique, and a forced call names one of them."""
    names = [tool["function"]["name"] for tool in tools]
    if len(set(names)) != len(names):
        raise serializers.ValidationError({"tools": ["Function names must be unique."]})
    if tool_choice is None or tool_choice[0] in ("none", "auto"):
        return
    choice, name = tool_choice
    if not tools:
        raise serializers.ValidationError({"tool_choice": [f'tool_choice "{choice}" needs tools.']})
    if choice == "function" and name not in names:
        # Only a well-formed name is repeated: errors are recorded, and this is the client's text.
        which = f"function {name!r}" if name is not None and FUNCTION_NAME.fullmatch(name) else "a function"
        raise serializers.ValidationError({"tool_choice": [f"It names {which}, which is not among the tools."]})


class CompletionRequestSerializer(SamplingFieldsSerializer):
    prompt = PromptField()
    echo = serializers.BooleanField(required=False, allow_null=True)
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    best_of = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=5)
    # Unset means the model's default, else OpenAI's 16 (applied with the other sampling defaults).
    max_tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Defaults to the model's default, else 16."
    )

    def validate_prompt(self, value):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            raise UnsupportedParameter("Batched prompts (a list of several strings) are not supported.", param="prompt")
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            raise UnsupportedParameter("Token-id prompts are not supported; send text.", param="prompt")
        raise serializers.ValidationError("Must be a string.")
