"""Charts drawn on the server: the SVG is well-formed XML that escapes what it is given,
draws no bar for a hidden row and marks small ones; the PNG is that SVG rendered."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

from gateway.operators import charts
from gateway.operators.charts import Point
from tests.conftest import SERVICE_MISSING

SVG = "{http://www.w3.org/2000/svg}"
ACTORS = [
    Point("Armée (FAMa)", 42.9, 15.8, 75.0, n=7),
    Point("Gendarmerie", 60.0, 23.1, 88.2, n=5, small=True),
    Point("Police", None, suppressed=True),
    Point('<script>alert("x")</script>', 10.0, 1.8, 40.4, n=10),
]

pytestmark = pytest.mark.nodb


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - the gateway's own SVG, checked here


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in parse(svg).iter(f"{SVG}text")]


def test_bars_one_per_shown_row_with_its_interval() -> None:
    svg = charts.bars("Confiance par acteur", ACTORS)
    root = parse(svg)  # well-formed
    assert root.find(f"{SVG}title").text == "Confiance par acteur"  # type: ignore[union-attr]
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("height") != "100%"]
    assert len(bars) == 3  # the hidden police row has no bar
    assert float(bars[0].get("width", 0)) == pytest.approx(420 * 0.429, abs=0.1)
    assert bars[1].get("fill") == charts.PALE  # small: drawn pale...
    shown = texts(svg)
    assert "Gendarmerie *" in shown  # ...and marked
    assert "masqué (trop peu de réponses)" in shown
    assert "43 %  n=7" in shown
    assert '<script>alert("x")</script>' in shown  # as text, escaped in the SVG
    assert "<script>" not in svg
    assert len(list(root.iter(f"{SVG}path"))) == 3  # one whisker per bar


def test_the_words_are_the_callers() -> None:
    words = charts.Words(suppressed="dogo", small="* mɔgɔ dɔɔnin", interval="i", band="b",
                         nobody="foyi")
    svg = charts.bars("Dannaya", [*ACTORS, Point("Garadiw", None)], words=words)
    assert {"dogo", "* mɔgɔ dɔɔnin", "foyi"} <= set(texts(svg))


def test_trend_leaves_a_gap_where_a_week_is_hidden() -> None:
    weeks = [Point("2026-W48", 30.0, 20.0, 45.0, 40), Point("2026-W49", 35.0, 22.0, 50.0, 30),
             Point("2026-W50", None, suppressed=True),
             Point("2026-W51", 50.0, 30.0, 70.0, 4, small=True)]
    root = parse(charts.trend("L'armée, par semaine", weeks))
    lines = list(root.iter(f"{SVG}polyline"))
    assert [len(p.get("points", "").split()) for p in lines] == [2, 1]  # two runs
    assert len(list(root.iter(f"{SVG}polygon"))) == 1  # a band where two weeks join
    assert len(list(root.iter(f"{SVG}circle"))) == 3


def test_png_is_the_svg_rendered() -> None:
    svg = charts.bars("Confiance par acteur", ACTORS)
    try:
        png = charts.png(svg)
    except charts.PngUnavailable as exc:
        pytest.skip(f"{SERVICE_MISSING}: {exc}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    root = parse(svg)
    assert (width, height) == (2 * int(root.get("width", 0)), 2 * int(root.get("height", 0)))
