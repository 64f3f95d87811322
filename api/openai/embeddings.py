"""OpenAI's /v1/embeddings: the request, the answer's shape, and serving one request.

The vectors come from an embed-task model (a model of the other task is a 400 naming `model`),
one chunk per input, through the same lifecycle, limits and dispatch as a completion.

No `from __future__ import annotations` here: the TypedDicts are read by the OpenAPI schema.
"""

import base64
import struct
from collections.abc import Callable
from contextlib import aclosing
from typing import Annotated, Literal, TypedDict, get_args

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from engines.base import Chunk, GenerationRequest, SamplingParams
from models_registry.models import ApiKey
from serving import serve
from serving.lifecycle import request_lifecycle

from ..errors import error_info
from ..typed_shapes import Field, Schema
from .serializers import StrictSerializer

EMBEDDINGS = "embeddings"  # the endpoint, as records and logs name it
MAX_INPUTS = 2048  # inputs per request, as OpenAI allows
MAX_TOKEN_ID = 2**31 - 1  # llama.cpp's token ids are int32

_TOKEN_ARRAY = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID},
    "minItems": 1,
}


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def _is_token_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token(v) for v in value)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_INPUTS},
            _TOKEN_ARRAY,
            {"type": "array", "items": _TOKEN_ARRAY, "minItems": 1, "maxItems": MAX_INPUTS},
        ],
        "description": "What to embed: a string, a list of strings, a token array (ids of the model's "
        "vocabulary), or a list of token arrays; one vector each. Empty strings and arrays are refused, "
        "and so is an input longer than the model's context (`context_length_exceeded`).",
    }
)
class EmbeddingInputField(serializers.Field):
    """`input`, normalised to a tuple of inputs: each a string or a tuple of token ids."""

    def to_internal_value(self, data) -> tuple[str | tuple[int, ...], ...]:
        if isinstance(data, str):
            if not data:
                raise serializers.ValidationError("Must not be an empty string.")
            return (data,)
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError(
                "Must be a string, a list of strings, a token array or a list of token arrays, not empty."
            )
        if _is_token_array(data):
            return (tuple(data),)
        if len(data) > MAX_INPUTS:
            raise serializers.ValidationError(f"At most {MAX_INPUTS} inputs may be embedded at once.")
        if all(isinstance(item, str) for item in data):
            if not all(data):
                raise serializers.ValidationError("Must not contain empty strings.")
            return tuple(data)
        if all(_is_token_array(item) for item in data):
            return tuple(tuple(item) for item in data)
        raise serializers.ValidationError(
            f"Must be a string, a list of strings, a token array or a list of token arrays (ids from 0 to "
            f"{MAX_TOKEN_ID}), with no empty item and no mix of the two."
        )

    def to_representation(self, value):
        return [item if isinstance(item, str) else list(item) for item in value]


class EmbeddingRequestSerializer(StrictSerializer):
    """Create embedding vectors for one or more inputs."""

    model = serializers.CharField(max_length=256, help_text="An embedding model (its task is `embed`).")
    input = EmbeddingInputField()
    encoding_format = serializers.ChoiceField(
        choices=["float", "base64"],
        required=False,
        default="float",
        help_text="`float`: lists of numbers. `base64`: each vector's little-endian float32 bytes in "
        "base64 (the openai SDK asks for this and decodes it).",
    )
    dimensions = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="Must equal the model's vector size if given: vectors are never shortened.",
    )
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)


# --- The answer -----------------------------------------------------------------------------


ListObject = Literal["list"]
# The model list has the same `object`; settings' ENUM_NAME_OVERRIDES names the shared enum from here.
LIST_OBJECT_CHOICES = get_args(ListObject)


class EmbeddingUsage(TypedDict):
    prompt_tokens: Annotated[int, Field(min_value=0, help_text="Tokens of every input, by the model's tokenizer.")]
    total_tokens: Annotated[int, Field(min_value=0)]


class Embedding(TypedDict):
    object: Literal["embedding"]
    index: Annotated[int, Field(min_value=0, help_text="The input's position in `input`.")]
    embedding: Annotated[
        list[float] | str,
        Schema(
            {
                "oneOf": [
                    {"type": "array", "items": {"type": "number"}},
                    {"type": "string", "contentEncoding": "base64"},
                ],
                "description": "The unit-length vector: numbers, or (`encoding_format` base64) its "
                "little-endian float32 bytes in base64.",
            }
        ),
    ]


class EmbeddingList(TypedDict):
    """The vectors, one per input in input order, with the tokens they took."""

    object: ListObject
    data: list[Embedding]
    model: Annotated[str, Field(help_text="The model name as the request gave it.")]
    usage: EmbeddingUsage


def encode_vector(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    """The vector as a list, or as OpenAI's base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def embedding_list_body(
    *, model: str, vectors: list[tuple[float, ...]], prompt_tokens: int, encoding_format: str
) -> EmbeddingList:
    """OpenAI's embeddings answer."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode_vector(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


# --- Serving one request ----------------------------------------------------------------------


async def embeddings_serve(*, key: ApiKey, read_body: Callable[[], object]) -> EmbeddingList:
    """Answer one embeddings request; exactly one record (endpoint `embeddings`) whatever happens."""
    async with request_lifecycle(endpoint=EMBEDDINGS, api_key_id=key.pk, describe=error_info) as life:
        serializer = EmbeddingRequestSerializer(data=read_body())
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        route = await serve.route_request(key=key, name=body["model"], task="embed")
        life.routed(route)
        await life.admit(key)  # 429 past a per-key limit
        request = GenerationRequest(
            request_id=life.request_id,
            sampling=SamplingParams(),
            task="embed",
            inputs=body["input"],
            dimensions=body.get("dimensions"),
            tenant=str(key.pk),
        )
        vectors: list[tuple[float, ...] | None] = [None] * len(request.inputs)
        final: Chunk | None = None
        async with aclosing(await serve.generate(life, route, request)) as chunks:
            async for chunk in chunks:
                life.first_token()
                if chunk.finish_reason is not None:
                    final = chunk
                else:
                    vectors[chunk.index] = chunk.embedding
        if final is None or any(vector is None for vector in vectors):
            raise RuntimeError("the engine ended without a vector for every input")
        life.succeeded(final)
        result = embedding_list_body(
            model=body["model"],
            vectors=[vector for vector in vectors if vector is not None],
            prompt_tokens=final.prompt_tokens or 0,
            encoding_format=body["encoding_format"],
        )
    return result  # after the lifecycle: the record exists before the client has its answer
