"""JSON as the API accepts it, for HTTP bodies (a DRF parser) and WebSocket frames alike: the rules
of engines.json_text (bounded nesting, no lone surrogates), refused once, before anything else
sees the value."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from engines.json_text import MAX_DEPTH, InvalidJson, parse_json

__all__ = ["MAX_DEPTH", "InvalidJson", "JsonBodyParser", "parse_json"]


class JsonBodyParser(JSONParser):
    """DRF's JSON parser with parse_json's rules; refusals become 400 invalid_json."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return parse_json(stream.read() if stream is not None else b"")
        except InvalidJson as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
