"""Server-rendered SVG line charts: no JavaScript, no CDN, works offline and in any browser."""

from __future__ import annotations

import datetime as dt
import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Distinguishable on white and for common colour-vision deficiencies (Okabe-Ito).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 28


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value`, so ticks read well."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.2g}" if value < 1 else f"{value:.1f}"


def line_chart(
    *, title: str, unit: str, buckets: list[dt.datetime], series: dict[str, list[float | None]]
) -> SafeString:
    """One <svg>: a polyline per series over the buckets; None values break the line."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for points in series.values() for v in points if v is not None]
    y_max = _nice_max(max(values, default=0))
    n = max(len(buckets) - 1, 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / n

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)} ({escape(unit)})</text>',
    ]
    for step in range(5):
        value = y_max * step / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 4}" y="{y(value) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{escape(_number(value))}</text>'
        )
    if buckets:
        last = len(buckets) - 1
        for i in sorted({0, last // 2, last}):
            label = buckets[i].strftime("%m-%d %H:%M") + (" UTC" if i == last else "")
            anchor = "end" if i == last and last else "start" if i == 0 else "middle"  # stay inside the svg
            parts.append(
                f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="{anchor}">{escape(label)}</text>'
            )
    legend_x = LEFT + 8
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) == 1:  # a lone point has no line to draw: mark it
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                    f'points="{" ".join(run)}"><title>{escape(name)}</title></polyline>'
                )
        parts.append(
            f'<rect x="{legend_x}" y="{TOP + 2}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{TOP + 11}" font-size="11">{escape(name)}</text>'
        )
        legend_x += 24 + 7 * len(name)
    if not values:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" font-size="12" text-anchor="middle" '
            f'fill="#888">no requests in this window</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated label above went through escape()
