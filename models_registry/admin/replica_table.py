"""A model's copies as the admin shows them: a table on its page, and the JSON its page polls."""

from __future__ import annotations

from typing import Any

from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from ..models import Replica

COLUMNS = ("worker", "host", "state", "error", "state changed", "revision", "memory", "last used")


def _when(value) -> str:
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def replica_rows(replicas: list[Replica]) -> list[dict[str, Any]]:
    """Each copy as plain values (the JSON view's body)."""
    return [
        {
            "worker": r.worker.worker_id,
            "host": r.worker.host,
            "state": r.state,
            "error": r.error,
            "state_changed_at": r.state_changed_at.isoformat(),
            "revision": r.revision,
            "memory_bytes": r.memory_bytes,
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
        }
        for r in replicas
    ]


def replica_table(replicas: list[Replica]) -> str:
    """The copies as an HTML table, one row each; a sentence when there are none."""
    if not replicas:
        return format_html('<p id="replica-table" class="replica-none">{}</p>', "No copy is loaded on any host.")
    header = format_html_join("", "<th>{}</th>", ((c,) for c in COLUMNS))
    rows = format_html_join(
        "",
        '<tr class="replica replica-{}"><td>{}</td><td>{}</td><td class="replica-state">{}</td><td>{}</td>'
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                r.state,
                r.worker.worker_id,
                r.worker.host,
                r.state,
                r.error or "-",
                _when(r.state_changed_at),
                r.revision,
                "-" if r.memory_bytes is None else filesizeformat(r.memory_bytes),
                _when(r.last_used_at),
            )
            for r in replicas
        ),
    )
    return format_html('<table id="replica-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', header, rows)
