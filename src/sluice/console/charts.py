"""Bar charts as inline SVG, drawn on the server: no chart library, no script, a few KB.

Colours are SVG presentation attributes (never ``style``), so the console's Content-Security-
Policy needs no inline styles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Series", "bar_chart", "PALETTE", "stack_series"]

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#6b7280")
_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 720, 230, 80, 26, 10


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: tuple[float, ...]  # one per day
    colour: str


def stack_series(
    days: Sequence[str], points: dict[str, dict[str, float]], limit: int, other: str
) -> list[Series]:
    """``points[name][day]`` -> the ``limit`` largest series and one for the rest, coloured."""
    totals = sorted(points, key=lambda name: -sum(points[name].values()))
    kept, rest = totals[:limit], totals[limit:]
    out = [
        Series(name, tuple(points[name].get(d, 0.0) for d in days), PALETTE[i % len(PALETTE)])
        for i, name in enumerate(kept)
    ]
    if rest:
        values = tuple(sum(points[name].get(d, 0.0) for name in rest) for d in days)
        out.append(Series(other, values, PALETTE[-1]))
    return out


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(
    days: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    title: str,
    least_top: float = 0.0,
) -> Markup:
    """Stacked bars, one per day; each segment's tooltip names its day, series and value.
    ``least_top``: the scale's smallest top (2 for counts, so the middle line is whole)."""
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    top = _nice_ceiling(max([*totals, least_top]))
    plot_w, plot_h = _WIDTH - _LEFT - 8, _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e5e7eb" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="13" '
            f'fill="#6b7280">{escape(fmt(top * fraction))}</text>'
        )
    label_every = max(1, len(days) // 8)
    for i, day in enumerate(days):
        x = _LEFT + i * slot + (slot - bar) / 2
        base: float = _TOP + plot_h
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{s.colour}"><title>{escape(day)} · {escape(s.label)}: '
                f"{escape(fmt(value))}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_HEIGHT - 6}" text-anchor="middle" '
                f'font-size="13" fill="#6b7280">{escape(day[5:])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
