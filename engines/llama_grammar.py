"""Output formats as GBNF, the grammar language of llama.cpp's grammar sampler.

JSON schemas go through llama-cpp-python's converter (`llama_cpp.llama_grammar.SchemaConverter`,
a port of llama.cpp's json_schema_to_grammar.py). That converter enforces a subset of JSON Schema
and silently drops the rest: a grammar that ignored `minimum` or `uniqueItems` would let the model
write JSON the schema forbids. So the schema is walked first, and every keyword outside what the
converter really enforces is refused (UnsupportedParameterError naming it), never ignored.
Annotations (`title`, `description`, `default`...) constrain nothing and are dropped.

What is enforced:
- `type` (one, or a list of bare types), `enum`, `const`, `anyOf`, `$ref` within the document
  (`#/$defs/...`, recursion included);
- objects: `properties`, `required`, `additionalProperties` (false, a schema, or true without
  `properties`). Without `additionalProperties` no other property is generated: narrower than the
  schema, so the output still validates. Properties come in the schema's order;
- arrays: `items` with `minItems`/`maxItems`, or a tuple (`prefixItems` or a list `items`);
- strings: `minLength`/`maxLength`, `format` date, time, date-time, uuid, and anchored `pattern`s
  of literal characters, classes, groups, alternation and quantifiers.

Strings in the output never hold raw control characters (the converter's `char` rule allows
them, and JSON forbids them), so every generated string parses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

from .base import OutputFormat
from .errors import InvalidInputError, UnsupportedParameterError

PARAM = "response_format"
# Keywords that describe a schema without constraining it; dropped before conversion.
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema"}
)
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
# What each kind of schema node may hold besides annotations (the converter's branches).
_OBJECT = frozenset({"type", "properties", "required", "additionalProperties"})
_ARRAY = frozenset({"type", "items", "minItems", "maxItems"})
_TUPLE = frozenset({"type", "prefixItems", "items"})
_STRING = frozenset({"type", "minLength", "maxLength"})
_PATTERN = frozenset({"type", "pattern"})
_FORMAT = frozenset({"type", "format"})
_SCALAR = frozenset({"type"})
# The converter writes const/enum values and property names into GBNF literals without escaping
# backslashes, and its quote escaping then breaks; such strings cannot be enforced.
_UNSAFE_LITERAL = re.compile(r'["\\\x00-\x1f\x7f]')
# Patterns the converter translates faithfully: no `.` (it would allow quotes and backslashes
# inside the string), no negated classes, no escapes but of metacharacters, no `(?...)`.
_PATTERN_ESCAPE = re.compile(r"\\(.)")
_REGEX_METACHARS = frozenset("\\^$.|?*+()[]{}-/")
# JSON strings: any character but a quote, a backslash or a control character, or an escape.
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# Bounds on lengths and item counts: the grammar nests one optional group per allowed repetition.
MAX_COUNT = 500
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def grammar_for(output_format: OutputFormat) -> str:
    """The GBNF text that makes the model's output follow `output_format`."""
    if output_format.kind == "grammar":
        grammar = output_format.grammar or ""
        if not grammar.strip():
            raise InvalidInputError("'grammar' must be a non-empty GBNF grammar.", param="grammar")
        return grammar
    if output_format.kind == "json_object":
        return schema_grammar(ANY_JSON_OBJECT)
    if output_format.schema is None:
        raise InvalidInputError("response_format of type json_schema needs a schema.", param=PARAM)
    return schema_grammar(output_format.schema)


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for JSON valid against `schema`; UnsupportedParameterError names a keyword it cannot enforce."""
    from llama_cpp.llama_grammar import SchemaConverter

    cleaned = enforceable_schema(schema)
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        converter.visit(converter.resolve_refs(cleaned, ""), "")
    except (AssertionError, AttributeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UnsupportedParameterError(
            f"The JSON schema in response_format cannot be turned into a grammar: {exc}", param=PARAM
        ) from None
    if "char" in converter._rules:
        converter._rules["char"] = _JSON_CHAR
    return str(converter.format_grammar())


def enforceable_schema(schema: Any) -> dict[str, Any]:
    """A copy of `schema` without annotations; UnsupportedParameterError for any keyword the
    converter would not enforce, InvalidInputError for a schema that is not one."""
    if not isinstance(schema, dict):
        raise InvalidInputError("The JSON schema in response_format must be an object.", param=PARAM)
    root = copy.deepcopy(schema)
    definitions = {}
    for key in ("$defs", "definitions"):
        defs = root.pop(key, None)
        if defs is None:
            continue
        if not isinstance(defs, dict):
            raise InvalidInputError(f"'{key}' must be an object of schemas.", param=PARAM)
        definitions[key] = {name: _clean(sub, f"#/{key}/{name}", root=schema) for name, sub in defs.items()}
    return {**_clean(root, "#", root=schema), **definitions}


def _clean(node: Any, where: str, *, root: dict[str, Any]) -> dict[str, Any]:
    """`node` with annotations dropped and its subschemas cleaned; refuses what is not enforced."""
    if not isinstance(node, dict):
        raise _unsupported(where, "boolean schemas" if isinstance(node, bool) else "a non-object schema")
    keys = {key for key in node if key not in ANNOTATIONS and not key.startswith("x-")}
    if where != "#":
        for key in ("$defs", "definitions"):
            if key in keys:
                raise _unsupported(f"{where}/{key}", f"'{key}' below the top of the schema")
    allowed = _allowed_keys(node, keys, where, root)
    for key in sorted(keys - allowed):
        raise _unsupported(f"{where}/{key}", f"the '{key}' keyword")
    cleaned = {key: node[key] for key in keys}
    _check_counts(cleaned, where)
    if "anyOf" in cleaned:
        cleaned["anyOf"] = [_clean(sub, f"{where}/anyOf/{i}", root=root) for i, sub in enumerate(node["anyOf"])]
    if isinstance(cleaned.get("properties"), dict):
        cleaned["properties"] = {
            name: _clean(sub, f"{where}/properties/{name}", root=root) for name, sub in node["properties"].items()
        }
    if isinstance(cleaned.get("additionalProperties"), dict):
        cleaned["additionalProperties"] = _clean(
            node["additionalProperties"], f"{where}/additionalProperties", root=root
        )
    for key in ("items", "prefixItems"):
        value = cleaned.get(key)
        if isinstance(value, dict):
            cleaned[key] = _clean(value, f"{where}/{key}", root=root)
        elif isinstance(value, list):
            cleaned[key] = [_clean(sub, f"{where}/{key}/{i}", root=root) for i, sub in enumerate(value)]
    return cleaned


def _allowed_keys(node: dict[str, Any], keys: set[str], where: str, root: dict[str, Any]) -> frozenset[str]:
    """The keywords `node` may carry, given the branch of the converter it takes; checks their values."""
    kind = node.get("type")
    if "$ref" in keys:
        _check_ref(node["$ref"], where, root)
        return frozenset({"$ref"})
    if "anyOf" in keys:
        if not isinstance(node["anyOf"], list) or not node["anyOf"]:
            raise InvalidInputError(f"'anyOf' at {where} must be a non-empty list of schemas.", param=PARAM)
        return frozenset({"anyOf"})
    if kind is not None and not isinstance(kind, list) and kind not in TYPES:
        raise InvalidInputError(f"Unknown type {str(kind)[:40]!r} at {where}.", param=PARAM)
    if isinstance(kind, list):
        if not kind or not all(isinstance(t, str) and t in TYPES for t in kind):
            raise InvalidInputError(f"'type' at {where} must list JSON types.", param=PARAM)
        return frozenset({"type"})
    if "const" in keys or "enum" in keys:
        values = [node["const"]] if "const" in keys else node["enum"]
        if not isinstance(values, list) or not values:
            raise InvalidInputError(f"'enum' at {where} must be a non-empty list.", param=PARAM)
        for value in values:
            _check_literal(value, where)
        return frozenset({"type", "const", "enum"})
    if kind in (None, "object") and ("properties" in keys or node.get("additionalProperties", True) is not True):
        return _object_keys(node, where)
    if kind in (None, "array") and ("items" in keys or "prefixItems" in keys):
        tuple_items = "prefixItems" in keys or isinstance(node.get("items"), list)
        if tuple_items and "prefixItems" in keys and "items" in keys:
            raise _unsupported(f"{where}/items", "'items' beside 'prefixItems'")
        return _TUPLE if tuple_items else _ARRAY
    if kind in (None, "string") and "pattern" in keys:
        _check_pattern(node["pattern"], where)
        return _PATTERN
    if kind in (None, "string") and "format" in keys:
        if node["format"] not in FORMATS:
            raise _unsupported(f"{where}/format", f"the string format {str(node['format'])[:40]!r}")
        return _FORMAT
    if kind == "string":
        return _STRING
    if kind == "object" or not keys:
        return frozenset({"type", "additionalProperties"})
    # No branch of the converter takes the rest (a bare `not`, `allOf`, `minLength` without a
    # type...): every keyword of it is refused by name.
    return _SCALAR if kind is not None else frozenset()


def _object_keys(node: dict[str, Any], where: str) -> frozenset[str]:
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise InvalidInputError(f"'properties' at {where} must be an object.", param=PARAM)
    for name in properties:
        _check_literal(name, f"{where}/properties")
    required = node.get("required", [])
    if not isinstance(required, list):
        raise InvalidInputError(f"'required' at {where} must be a list of property names.", param=PARAM)
    missing = [name for name in required if name not in properties]
    if missing:
        raise _unsupported(
            f"{where}/required", f"'required' naming {str(missing[0])[:64]!r}, which 'properties' does not define"
        )
    additional = node.get("additionalProperties")
    if additional is not None and not isinstance(additional, (bool, dict)):
        raise InvalidInputError(f"'additionalProperties' at {where} must be a boolean or a schema.", param=PARAM)
    return _OBJECT


def _check_counts(node: dict[str, Any], where: str) -> None:
    """Length and item bounds are counts, at most MAX_COUNT (the grammar spells each repetition out)."""
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        value = node.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"'{key}' at {where} must be a non-negative integer.", param=PARAM)
        if value > MAX_COUNT:
            raise _unsupported(f"{where}/{key}", f"'{key}' above {MAX_COUNT}")
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if node.get(low) is not None and node.get(high) is not None and node[low] > node[high]:
            raise InvalidInputError(f"'{low}' at {where} is greater than '{high}'.", param=PARAM)


def _check_ref(ref: Any, where: str, root: dict[str, Any]) -> None:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise _unsupported(f"{where}/$ref", "a '$ref' outside the schema (only '#/...' references are)")
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            raise InvalidInputError(f"'$ref' {ref[:80]!r} at {where} points at nothing.", param=PARAM)
        target = target[part]


def _check_literal(value: Any, where: str) -> None:
    for text in _strings_in(value):
        if _UNSAFE_LITERAL.search(text):
            raise _unsupported(where, "enum, const or property-name strings holding quotes, backslashes or controls")


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings_in(item)


def _check_pattern(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
        raise _unsupported(f"{where}/pattern", "a 'pattern' not anchored with ^ and $")
    body = pattern[1:-1]
    escapes_ok = all(match.group(1) in _REGEX_METACHARS for match in _PATTERN_ESCAPE.finditer(body))
    plain = _PATTERN_ESCAPE.sub("", body)
    if not escapes_ok or "." in plain or "[^" in plain or "(?" in plain or '"' in plain or "^" in plain:
        raise _unsupported(
            f"{where}/pattern",
            "this 'pattern' (only literal characters, [classes], groups, | and quantifiers are enforced; "
            "not '.', '[^...]', '(?...)' or escapes such as \\d)",
        )


def _unsupported(where: str, what: str) -> UnsupportedParameterError:
    return UnsupportedParameterError(
        f"response_format: {what} at {where} cannot be enforced by this engine's grammar sampler.", param=PARAM
    )
