"""What a browser posts for the served model's admin form."""

from __future__ import annotations


def served_model_form(**fields) -> dict:
    """An add form as the page renders it (its initial values), with `fields` changed."""
    return {
        "name": "m",
        "task": "generate",
        "aliases": "",
        "enabled": "on",
        "description": "",
        "owned_by": "me",
        "engine": "llama_cpp",
        "source": "",
        "context_length": "2048",
        "engine_options": "{}",
        "default_params": "{}",
        "replicas": "1",
        "placement_label": "",
        "placement_host": "",
        "keep_alive_seconds": "5m",
        "slots": "",
        **fields,
    }


def resubmitted(form, **changes) -> dict:
    """The POST body of `form` (an admin change form) sent back as rendered, with `changes`."""
    data: dict = {}
    for bound in form:
        value = bound.value()
        if isinstance(value, bool):
            if value:
                data[bound.name] = "on"
            continue
        data[bound.name] = "" if value is None else str(value)
    data.update(changes)
    return data
