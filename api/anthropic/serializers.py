"""Validation of Anthropic Messages bodies. Unknown fields are rejected, as Anthropic does.

These serializers are also the request bodies' OpenAPI schema (api/anthropic/schema.py); a field
that takes several shapes says which with `extend_schema_field`, beside the code that parses it.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from serving.errors import UnsupportedParameter

from ..openai.serializers import StrictSerializer

ROLES = ("user", "assistant")
MAX_STOP_SEQUENCES = 16
# Block types Anthropic defines that no engine here can read; only these are named back in an error.
_KNOWN_UNSUPPORTED_BLOCKS = (
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "container_upload",
)
# `cache_control` marks a prompt-caching breakpoint; the engines here cache prefixes on their own.
_CACHE_CONTROL = {"type": "object", "description": "Accepted; prefixes are cached without it."}
_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}, "cache_control": _CACHE_CONTROL},
}
_TOOL_USE_BLOCK = {
    "type": "object",
    "required": ["type", "id", "name", "input"],
    "properties": {
        "type": {"const": "tool_use"},
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "input": {"type": "object"},
        "cache_control": _CACHE_CONTROL,
    },
}
_TOOL_RESULT_BLOCK = {
    "type": "object",
    "required": ["type", "tool_use_id"],
    "properties": {
        "type": {"const": "tool_result"},
        "tool_use_id": {"type": "string", "minLength": 1},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
        "is_error": {"type": "boolean"},
        "cache_control": _CACHE_CONTROL,
    },
}


def _text(block: object, where: str) -> str:
    """The text of a text block (other block types are refused by the caller)."""
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise serializers.ValidationError(f"{where} must be a text block: {{'type': 'text', 'text': '...'}}.")
    return block["text"]


def _refuse_block_type(kind: object) -> None:
    if kind in _KNOWN_UNSUPPORTED_BLOCKS:
        raise UnsupportedParameter(
            f"Content blocks of type {kind!r} are not supported; only 'text', 'tool_use' and 'tool_result' are.",
            param="messages",
        )
    raise serializers.ValidationError("Unknown content block type; expected 'text', 'tool_use' or 'tool_result'.")


def _block(block: object) -> dict:
    """One content block, normalised: text {text}, tool_use {id, name, input}, tool_result {tool_use_id, text, is_error}."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise serializers.ValidationError("Each content block must be an object with a 'type'.")
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _text(block, "A text block")}
    if kind == "tool_use":
        if not (isinstance(block.get("id"), str) and block["id"] and isinstance(block.get("name"), str)):
            raise serializers.ValidationError("A tool_use block needs a string 'id' and 'name'.")
        if not isinstance(block.get("input"), dict):
            raise serializers.ValidationError("A tool_use block's 'input' must be an object.")
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]}
    if kind == "tool_result":
        if not (isinstance(block.get("tool_use_id"), str) and block["tool_use_id"]):
            raise serializers.ValidationError("A tool_result block needs a string 'tool_use_id'.")
        content = block.get("content", "")
        if isinstance(content, list):
            content = "".join(_text(part, "A tool_result's content block") for part in content)
        elif not isinstance(content, str):
            raise serializers.ValidationError("A tool_result's content must be a string or a list of text blocks.")
        is_error = block.get("is_error", False)
        if not isinstance(is_error, bool):
            raise serializers.ValidationError("A tool_result's 'is_error' must be a boolean.")
        return {"type": "tool_result", "tool_use_id": block["tool_use_id"], "text": content, "is_error": is_error}
    _refuse_block_type(kind)
    raise AssertionError("unreachable")  # _refuse_block_type always raises


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"oneOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK, _TOOL_RESULT_BLOCK]}},
        ],
        "description": "A string, or content blocks: `text`, `tool_use` (assistant turns) and `tool_result` "
        "(user turns). Other block types (`image`, `document`, ...) get 400.",
    }
)
class ContentField(serializers.Field):
    """A message's content: a string or a list of blocks; normalised to a list of blocks."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return [{"type": "text", "text": data}]
        if isinstance(data, list):
            return [_block(block) for block in data]
        raise serializers.ValidationError("Must be a string or a list of content blocks.")

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}],
        "description": "The system prompt: a string or a list of text blocks.",
    }
)
class SystemField(serializers.Field):
    """`system`: a string or text blocks; normalised to one string."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            return "".join(_text(block, "Each system block") for block in data)
        raise serializers.ValidationError("Must be a string or a list of text blocks.")

    def to_representation(self, value):
        return value


class InputMessageSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=ROLES, error_messages={"invalid_choice": "Must be 'user' or 'assistant'."})
    content = ContentField()

    def validate(self, attrs):
        misplaced = "tool_result" if attrs["role"] == "assistant" else "tool_use"
        if any(block["type"] == misplaced for block in attrs["content"]):
            raise serializers.ValidationError(
                {"content": [f"A {attrs['role']} message cannot hold {misplaced} blocks."]}
            )
        return attrs


class AnthropicToolSerializer(StrictSerializer):
    """A client tool; Anthropic's server tools (those with another `type`) get 400."""

    name = serializers.RegexField(
        r"^[a-zA-Z0-9_-]{1,128}$", error_messages={"invalid": "Must match ^[a-zA-Z0-9_-]{1,128}$."}
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    input_schema = serializers.DictField(help_text="The JSON schema of the tool's input (an object).")
    type = serializers.CharField(required=False, allow_null=True)
    cache_control = serializers.DictField(required=False, allow_null=True, help_text=_CACHE_CONTROL["description"])
    # Forced calls are grammar-constrained and streamed in fragments whatever these say.
    strict = serializers.BooleanField(required=False, allow_null=True)
    eager_input_streaming = serializers.BooleanField(required=False, allow_null=True)

    def validate_type(self, value):
        if value not in (None, "custom"):
            raise UnsupportedParameter("Only client tools (type 'custom') are supported.", param="tools")
        return value

    def validate_input_schema(self, value):
        if value.get("type", "object") != "object":
            raise serializers.ValidationError("The input schema's type must be 'object'.")
        return value


class AnthropicToolChoiceSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=("auto", "any", "tool", "none"))
    name = serializers.CharField(required=False, max_length=128)
    disable_parallel_tool_use = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        if (attrs["type"] == "tool") != ("name" in attrs):
            raise serializers.ValidationError({"name": ["A 'name' is given exactly when the type is 'tool'."]})
        return attrs


class MessageMetadataSerializer(StrictSerializer):
    user_id = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=256)


class ThinkingSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=("enabled", "disabled"))
    budget_tokens = serializers.IntegerField(required=False, min_value=1)

    def validate_type(self, value):
        if value != "disabled":
            raise UnsupportedParameter("Extended thinking is not supported.", param="thinking")
        return value


class JsonOutputFormatSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=("json_schema",))
    schema = serializers.DictField(help_text="The JSON schema the answer's text must satisfy.")


class OutputConfigSerializer(StrictSerializer):
    """`format` asks for JSON valid against a schema (structured output); `effort` is refused."""

    format = JsonOutputFormatSerializer(required=False, allow_null=True)
    effort = serializers.ChoiceField(choices=("low", "medium", "high", "xhigh", "max"), required=False, allow_null=True)

    def validate_effort(self, value):
        if value is not None:
            raise UnsupportedParameter("'effort' is not supported.", param="output_config.effort")
        return value


class CountTokensRequestSerializer(StrictSerializer):
    """What `/v1/messages/count_tokens` counts: the prompt a Messages request with these fields would have."""

    model = serializers.CharField(max_length=256)
    messages = InputMessageSerializer(many=True, allow_empty=False)
    system = SystemField(required=False, allow_null=True)
    tools = AnthropicToolSerializer(many=True, required=False, allow_null=True)
    tool_choice = AnthropicToolChoiceSerializer(required=False, allow_null=True)
    thinking = ThinkingSerializer(required=False, allow_null=True)
    output_config = OutputConfigSerializer(required=False, allow_null=True)
    cache_control = serializers.DictField(required=False, allow_null=True, help_text=_CACHE_CONTROL["description"])

    def validate(self, attrs):
        if attrs["messages"][-1]["role"] == "assistant":
            # Anthropic continues a final assistant turn (prefill); chat templates here open a new one.
            raise UnsupportedParameter(
                "A final assistant message (prefill) is not supported; end with a user message.", param="messages"
            )
        choice, tools = attrs.get("tool_choice"), attrs.get("tools") or []
        if choice and choice["type"] == "tool" and choice["name"] not in {tool["name"] for tool in tools}:
            raise serializers.ValidationError({"tool_choice": ["The named tool is not in 'tools'."]})
        if choice and choice["type"] in ("any", "tool") and not tools:
            raise serializers.ValidationError({"tool_choice": ["Forcing a tool needs 'tools'."]})
        return attrs


class MessagesRequestSerializer(CountTokensRequestSerializer):
    """A Messages request; `top_k` is accepted by the schema and refused by every engine here (400)."""

    max_tokens = serializers.IntegerField(min_value=1)
    stop_sequences = serializers.ListField(
        child=serializers.CharField(min_length=1, trim_whitespace=False),
        required=False,
        allow_null=True,
        max_length=MAX_STOP_SEQUENCES,
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    top_k = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    metadata = MessageMetadataSerializer(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False, allow_null=True)
    service_tier = serializers.ChoiceField(choices=("auto", "standard_only"), required=False, allow_null=True)

    def validate_top_k(self, value):
        if value is not None:
            raise UnsupportedParameter("'top_k' is not supported: sampling here takes top_p.", param="top_k")
        return value
