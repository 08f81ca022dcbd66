"""Charts for the result pages and the restitution workshops, drawn on the server: SVG
written here by hand (no chart library, nothing from a CDN), PNG rendered from that same
SVG by cairosvg (which needs the system's libcairo2: ``scripts/install-cairo``).

Two shapes, both of percentages with their 95 % intervals:

- :func:`bars`: one horizontal bar per row (an actor, a commune), its interval drawn as a
  whisker across the bar's end;
- :func:`trend`: one point per week joined by a line, the interval as a band.

A row the shared view hides (``suppressed``) draws no bar and says so; a small one
(fewer respondents than the minimum cell) is drawn pale and marked with ``*``. Every
word on a chart (title, labels, the notes) comes from the caller, in its language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

WIDTH = 720
FONT = "DejaVu Sans, Verdana, sans-serif"
INK, BAR, PALE, WHISKER, GRID = "#1d2b36", "#2f6f9f", "#a9c6dc", "#0b2233", "#d5dde3"


class PngUnavailable(RuntimeError):
    """cairosvg or the libcairo2 it loads is missing on this machine."""


@dataclass(frozen=True)
class Point:
    """One bar or one week: a percentage (0-100) with its interval, or nothing shown."""

    label: str
    value: float | None  # None: suppressed, or nobody answered
    low: float | None = None
    high: float | None = None
    n: int | None = None
    small: bool = False
    suppressed: bool = False


@dataclass(frozen=True)
class Words:
    """What a chart says besides its data, in the reader's language."""

    suppressed: str = "masqué (trop peu de réponses)"
    small: str = "* moins de 5 réponses : à lire avec prudence"
    interval: str = "trait : intervalle de confiance à 95 %"
    band: str = "bande : intervalle de confiance à 95 %"
    nobody: str = "aucune réponse"


def _text(x: float, y: float, body: str, *, size: int = 13, anchor: str = "start",
          fill: str = INK, weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" font-weight="{weight}">{escape(body)}</text>')


def _svg(height: float, title: str, parts: Sequence[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" font-family={quoteattr(FONT)} role="img" '
            f'aria-label={quoteattr(title)}>'
            f'<title>{escape(title)}</title>'
            f'<rect width="100%" height="100%" fill="#ffffff"/>'
            + "".join(parts) + "</svg>")


def _percent(value: float) -> str:
    return f"{value:.0f} %"


def bars(title: str, points: Sequence[Point], *, words: Words = Words()) -> str:
    """Horizontal bars of percentages, 0-100 %, one per point, with interval whiskers."""
    left, right, top, row = 190.0, 110.0, 48.0, 30.0
    span = WIDTH - left - right
    parts = [_text(12, 26, title, size=16, weight="bold")]
    for tick in (0, 25, 50, 75, 100):
        x = left + span * tick / 100
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6:.1f}" x2="{x:.1f}" '
                     f'y2="{top + row * len(points):.1f}" stroke="{GRID}"/>')
        parts.append(_text(x, top - 10, _percent(tick), size=10, anchor="middle"))
    for i, point in enumerate(points):
        y = top + i * row
        label = point.label + (" *" if point.small else "")
        parts.append(_text(left - 8, y + 19, label, anchor="end"))
        if point.suppressed or point.value is None:
            note = words.suppressed if point.suppressed else words.nobody
            parts.append(_text(left + 6, y + 19, note, size=12, fill="#6b7780"))
            continue
        width = span * point.value / 100
        fill = PALE if point.small else BAR
        parts.append(f'<rect x="{left:.1f}" y="{y + 6:.1f}" width="{width:.1f}" '
                     f'height="{row - 12:.1f}" fill="{fill}"/>')
        if point.low is not None and point.high is not None:
            x1, x2 = left + span * point.low / 100, left + span * point.high / 100
            mid = y + row / 2
            parts.append(f'<path d="M{x1:.1f} {mid:.1f}H{x2:.1f}M{x1:.1f} {mid - 6:.1f}'
                         f'V{mid + 6:.1f}M{x2:.1f} {mid - 6:.1f}V{mid + 6:.1f}" '
                         f'stroke="{WHISKER}" stroke-width="1.5" fill="none"/>')
        shown = _percent(point.value) + (f"  n={point.n}" if point.n is not None else "")
        parts.append(_text(left + span + 8, y + 19, shown, size=12))
    bottom = top + row * len(points) + 22
    parts.append(_text(12, bottom, words.interval, size=11, fill="#4a5660"))
    if any(p.small for p in points):
        bottom += 16
        parts.append(_text(12, bottom, words.small, size=11, fill="#4a5660"))
    return _svg(bottom + 12, title, parts)


def trend(title: str, points: Sequence[Point], *, words: Words = Words()) -> str:
    """Percentages week by week: a line through the shown weeks, the interval as a band,
    a gap where a week is hidden."""
    left, right, top, height, inset = 56.0, 24.0, 44.0, 220.0, 36.0
    span = WIDTH - left - right - 2 * inset
    step = span / (len(points) - 1) if len(points) > 1 else 0.0
    parts = [_text(12, 26, title, size=16, weight="bold")]

    def y_of(value: float) -> float:
        return top + height * (1 - value / 100)

    def x_of(i: int) -> float:
        return left + inset + (step * i if len(points) > 1 else span / 2)

    for tick in (0, 25, 50, 75, 100):
        y = y_of(tick)
        parts.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{WIDTH - right:.1f}" '
                     f'y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(_text(left - 6, y + 4, _percent(tick), size=10, anchor="end"))
    runs: list[list[int]] = [[]]
    for i, point in enumerate(points):
        if point.value is None or point.suppressed:
            runs.append([])
        else:
            runs[-1].append(i)
    for run in (r for r in runs if r):
        banded = [i for i in run if points[i].low is not None and points[i].high is not None]
        if len(banded) > 1:
            upper = " ".join(f"{x_of(i):.1f},{y_of(points[i].high or 0):.1f}" for i in banded)
            lower = " ".join(f"{x_of(i):.1f},{y_of(points[i].low or 0):.1f}"
                             for i in reversed(banded))
            parts.append(f'<polygon points="{upper} {lower}" fill="{PALE}" '
                         f'fill-opacity="0.6"/>')
        line = " ".join(f"{x_of(i):.1f},{y_of(points[i].value or 0):.1f}" for i in run)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{BAR}" '
                     f'stroke-width="2.5"/>')
    for i, point in enumerate(points):
        x = x_of(i)
        parts.append(_text(x, top + height + 18, point.label, size=10, anchor="middle"))
        if point.value is None or point.suppressed:
            parts.append(_text(x, top + height - 6, "—", size=12, anchor="middle",
                               fill="#6b7780"))
            continue
        y = y_of(point.value)
        if point.low is not None and point.high is not None and len(points) == 1:
            parts.append(f'<path d="M{x:.1f} {y_of(point.low):.1f}V{y_of(point.high):.1f}" '
                         f'stroke="{WHISKER}" stroke-width="1.5"/>')
        fill = "#ffffff" if point.small else BAR
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" '
                     f'stroke="{BAR}" stroke-width="2"/>')
        parts.append(_text(x, y - 9, _percent(point.value) + (" *" if point.small else ""),
                           size=10, anchor="middle"))
    bottom = top + height + 40
    notes = [words.band, "— : " + words.suppressed]
    if any(p.small for p in points):
        notes.append(words.small)
    for note in notes:
        parts.append(_text(12, bottom, note, size=11, fill="#4a5660"))
        bottom += 16
    return _svg(bottom, title, parts)


def png(svg: str, *, scale: float = 2.0) -> bytes:
    """The SVG rendered to PNG (``scale`` times its size, for print and projectors)."""
    try:
        import cairosvg  # type: ignore[import-untyped]  # loads libcairo2 on import
    except (ImportError, OSError) as exc:
        raise PngUnavailable(
            "PNG charts need cairosvg and the system's libcairo2 (scripts/install-cairo)"
        ) from exc
    out: bytes = cairosvg.svg2png(bytestring=svg.encode("utf-8"), scale=scale)
    return out
