"""Response shapes written once, as TypedDicts, and documented through serializers derived from them.

The code that builds a response body annotates it with its TypedDict, so a type checker holds
the builder to the shape; drf-spectacular documents the same TypedDict through `serializer_for`,
so the OpenAPI schema never restates it. These serializers only describe: nothing renders with them.

Constraints and descriptions the types cannot carry ride along as `Annotated[T, Field(...)]`,
whose keywords are those of the DRF field the type maps to (`min_value`, `help_text`, ...).
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class Field:
    """`Annotated` metadata: keyword arguments for the DRF field a TypedDict key is documented as."""

    def __init__(self, **drf_kwargs: Any):
        self.drf_kwargs = drf_kwargs


class Schema:
    """`Annotated` metadata: the JSON schema of a key whose type the mapping cannot express (a
    union such as `list[float] | str`); the key is then documented by this schema alone."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema


def is_shape(hint: object) -> bool:
    return typing.is_typeddict(hint)


@functools.cache
def serializer_for(shape: Any) -> type[serializers.Serializer]:
    """The serializer documenting a TypedDict; its component name is the TypedDict's name."""
    hints = typing.get_type_hints(shape, include_extras=True)
    fields = {name: _field(hint, required=name in shape.__required_keys__) for name, hint in hints.items()}
    # The TypedDict's own docstring, if any, describes the component (inherited ones do not).
    namespace = {**fields, "__doc__": shape.__dict__.get("__doc__"), "__module__": shape.__module__}
    return type(f"{shape.__name__}Serializer", (serializers.Serializer,), namespace)


def _field(hint: Any, **kwargs: Any) -> serializers.Field:
    """The DRF field for one type hint; `kwargs` come from the enclosing key (required, Field(...))."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Required, NotRequired):  # whether a key is required comes from __required_keys__
        return _field(args[0], **kwargs)
    if origin is typing.Annotated:
        extra = {k: v for meta in hint.__metadata__ if isinstance(meta, Field) for k, v in meta.drf_kwargs.items()}
        schema = next((meta.schema for meta in hint.__metadata__ if isinstance(meta, Schema)), None)
        if schema is not None:
            return extend_schema_field(schema)(type("SchemaField", (serializers.JSONField,), {}))(**kwargs, **extra)
        return _field(args[0], **kwargs, **extra)
    if origin in (Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) != 1 or len(args) != 2:
            raise TypeError(f"only `T | None` unions are supported, not {hint}")
        return _field(members[0], **kwargs, allow_null=True)
    if origin is Literal:
        return serializers.ChoiceField(choices=list(args), **kwargs)
    if origin is list:
        (item,) = args
        if is_shape(item):
            return serializer_for(item)(many=True, **kwargs)
        return serializers.ListField(child=_field(item), **kwargs)
    if origin is dict:
        key, value = args
        if key is not str:
            raise TypeError(f"JSON object keys are strings, not {key}")
        return serializers.DictField(**kwargs) if value is Any else serializers.DictField(child=_field(value), **kwargs)
    if is_shape(hint):
        return serializer_for(hint)(**kwargs)
    if hint in _SCALARS:
        return _SCALARS[hint](**kwargs)
    raise TypeError(f"no schema mapping for {hint}")


_SCALARS: dict[object, type[serializers.Field]] = {
    str: serializers.CharField,
    int: serializers.IntegerField,
    float: serializers.FloatField,
    bool: serializers.BooleanField,
}
