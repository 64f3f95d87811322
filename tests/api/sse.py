"""Parsing Server-Sent Events bodies in tests."""

import json


def sse_events(text: str) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded except the final [DONE]."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def named_sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, JSON data) of each event of an SSE body whose events are named (`event:` lines)."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        events.append((name_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return events
