"""Validation of `/v1/responses` request bodies; also the body's OpenAPI schema.

Fields OpenAI defines but this platform does not implement are declared, so that a request
using one gets a 400 naming it (unsupported_parameter) rather than "unrecognized argument";
their default values (what the SDKs send when the caller sets nothing) are accepted.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from serving.errors import UnsupportedParameter

from ..serializers import StrictSerializer

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["input_text", "output_text", "text"]}, "text": {"type": "string"}},
}
_MESSAGE_ITEM = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "assistant", "system", "developer"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
    },
}
_FUNCTION_CALL_ITEM = {
    "type": "object",
    "required": ["type", "call_id", "name", "arguments"],
    "properties": {
        "type": {"const": "function_call"},
        "call_id": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "arguments": {"type": "string"},
    },
}
_FUNCTION_OUTPUT_ITEM = {
    "type": "object",
    "required": ["type", "call_id", "output"],
    "properties": {
        "type": {"const": "function_call_output"},
        "call_id": {"type": "string", "minLength": 1},
        "output": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
    },
}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "minItems": 1,
                "items": {"anyOf": [_MESSAGE_ITEM, _FUNCTION_CALL_ITEM, _FUNCTION_OUTPUT_ITEM]},
            },
        ],
        "description": "A user message as a string, or a list of items: messages (text parts only), "
        "`function_call` and `function_call_output`. Other item and part types get 400 unsupported_parameter.",
    }
)
class InputField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "name"],
            "properties": {
                "type": {"const": "function"},
                "name": {"type": "string", "minLength": 1, "maxLength": 64},
                "description": {"type": ["string", "null"]},
                "parameters": {"type": ["object", "null"]},
                "strict": {"type": ["boolean", "null"]},
            },
        },
        "description": "Function tools. Built-in tools (web_search, file_search, ...) get 400 unsupported_parameter; "
        "tools on an engine without tool support too.",
    }
)
class ToolsField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {
                "type": "object",
                "required": ["type", "name"],
                "properties": {"type": {"const": "function"}, "name": {"type": "string"}},
            },
        ],
        "description": "`none`, `auto`, `required` or a named function from `tools`.",
    }
)
class ResponsesToolChoiceField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "format": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["text", "json_object", "json_schema"]},
                    "name": {"type": "string"},
                    "schema": {"type": "object"},
                    "strict": {"type": ["boolean", "null"]},
                    "description": {"type": "string"},
                },
            },
        },
        "description": "`format` other than `text` needs structured output: 400 unsupported_parameter on "
        "engines without it.",
    }
)
class TextConfigField(serializers.JSONField):
    pass


# OpenAI's fields that are not implemented here, each with the values that ask for nothing.
_UNSUPPORTED_UNLESS: dict[str, tuple[object, ...]] = {
    "reasoning": (None,),
    "background": (None, False),
    "include": (None, []),
    "truncation": (None, "disabled"),
    "prompt": (None,),
    "service_tier": (None, "auto", "default"),
    "top_logprobs": (None, 0),
    "max_tool_calls": (None,),
    "conversation": (None,),
    "prompt_cache_key": (None,),
    "safety_identifier": (None,),
    "stream_options": (None, {}, {"include_obfuscation": False}),
}


class ResponseRequestSerializer(StrictSerializer):
    """A `/v1/responses` request body."""

    model = serializers.CharField(max_length=256)
    input = InputField()
    instructions = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    tools = ToolsField(required=False, allow_null=True)
    tool_choice = ResponsesToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    text = TextConfigField(required=False, allow_null=True)
    metadata = serializers.DictField(
        child=serializers.CharField(max_length=512, allow_blank=True), required=False, allow_null=True
    )
    stream = serializers.BooleanField(required=False, default=False, allow_null=True)
    store = serializers.BooleanField(required=False, default=True, allow_null=True)
    previous_response_id = serializers.CharField(required=False, allow_null=True, max_length=64)
    user = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    # Declared so that their use is refused by name (validate), not as unknown fields.
    reasoning = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    background = serializers.JSONField(required=False, allow_null=True, help_text="Only false.")
    include = serializers.JSONField(required=False, allow_null=True, help_text="Only an empty list.")
    truncation = serializers.JSONField(required=False, allow_null=True, help_text="Only `disabled`.")
    prompt = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    service_tier = serializers.JSONField(required=False, allow_null=True, help_text="Only `auto` or `default`.")
    top_logprobs = serializers.JSONField(required=False, allow_null=True, help_text="Only 0.")
    max_tool_calls = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    conversation = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    prompt_cache_key = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    safety_identifier = serializers.JSONField(required=False, allow_null=True, help_text="Only null.")
    stream_options = serializers.JSONField(
        required=False, allow_null=True, help_text="Only `include_obfuscation` false: events carry no padding."
    )

    def validate_metadata(self, value):
        if value is not None and len(value) > 16:
            raise serializers.ValidationError("At most 16 metadata keys are allowed.")
        if value is not None and any(len(key) > 64 for key in value):
            raise serializers.ValidationError("Metadata keys are at most 64 characters.")
        return value

    def validate(self, attrs):
        for name, harmless in _UNSUPPORTED_UNLESS.items():
            value = attrs.get(name)
            if not any(value == allowed and type(value) is type(allowed) for allowed in harmless):
                raise UnsupportedParameter(f"The '{name}' parameter is not supported.", param=name)
        return attrs


class InputItemsQuerySerializer(StrictSerializer):
    """Query parameters of `GET /v1/responses/{id}/input_items`."""

    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)
    after = serializers.CharField(required=False, max_length=64)


def input_items_query(params) -> dict:
    """The validated query (400 naming the parameter otherwise)."""
    serializer = InputItemsQuerySerializer(data={name: params.get(name) for name in params})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
