"""JSON text as the platform accepts it from outside: bounded nesting, no NaN/Infinity, no lone surrogates.

Python's `json` takes more than the platform can safely handle: nesting deep enough to exhaust
the recursion limit (here or in any code that later walks the value), and lone UTF-16
surrogates (`"\\ud800"`), which are valid JSON escapes but cannot be encoded as UTF-8, so
they fail far away in an engine, a log line or an error page. API bodies and WebSocket frames
(api/json_body.py) and the admin's JSON fields (models_registry.forms_fields) refuse them here.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

# Deepest nesting of arrays and objects accepted. OpenAI bodies nest a handful of levels
# (a JSON schema in `tools` or `response_format` a few dozen at most); 64 leaves room for
# those while keeping every later recursive walk far from Python's recursion limit.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_DEEP = f"arrays and objects nested more than {MAX_DEPTH} levels deep"


class InvalidJson(ValueError):
    """The text is not JSON the API accepts; the message never quotes the input."""


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidJson(f"{name} is not valid JSON")


def parse_json(data: bytes | str) -> Any:
    """Decode one JSON document, refusing invalid UTF-8, NaN/Infinity, deep nesting and lone surrogates."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("the body is not valid UTF-8") from None
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJson(_TOO_DEEP) from None
    except json.JSONDecodeError as exc:
        # Only the position: the message must not echo input, which may not even be encodable.
        raise InvalidJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check(value)
    return value


def _check(value: Any) -> None:
    """Walk the decoded value without recursion: bounded depth, no lone surrogate anywhere."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidJson("a string holds a lone UTF-16 surrogate escape, which is not a Unicode character")
            continue
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InvalidJson(_TOO_DEEP)
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
