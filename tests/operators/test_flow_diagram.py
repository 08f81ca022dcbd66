"""The flow diagram: every step a box in rows by distance from the start, every way out an
arrow labelled with what leads along it, other flows as boxes of their own; the SVG
escapes what it quotes and carries no script or inline style."""

from __future__ import annotations

import re

from gateway.content import catalogs
from gateway.content.flowdef import Flow
from gateway.operators.flow_diagram import layout, svg
from tests.conftest import REPO


def flow(name: str) -> Flow:
    content, _ = catalogs.load(REPO)
    return content.flows[name]


def test_the_report_flow_as_boxes_and_labelled_arrows() -> None:
    drawn = layout(flow("report"))
    rows: dict[int, list[str]] = {}
    for node in drawn.nodes:
        rows.setdefault(node.y, []).append(node.id)
    assert list(rows.values()) == [["category"], ["force"], ["when"], ["cercle"],
                                   ["cercle_known"], ["text_offer", "commune"],
                                   ["text", "done"]]
    assert {(e.source, e.target, e.label) for e in drawn.edges} == {
        ("category", "force", "1-9"), ("force", "when", "1-6"), ("when", "cercle", "1-4"),
        ("cercle", "cercle_known", "liste"), ("cercle_known", "text_offer", "=other"),
        ("cercle_known", "commune", "sinon"), ("commune", "text_offer", "liste"),
        ("text_offer", "text", "1"), ("text_offer", "done", "2"), ("text", "done", "texte"),
    }


def test_other_flows_are_boxes_of_their_own() -> None:
    drawn = layout(flow("main"))
    assert [n.title for n in drawn.nodes if n.kind == "flow"] == [
        "→ report", "→ poll", "→ subscribe", "→ info", "→ erase", "→ language"]
    assert {e.label for e in drawn.edges} == {"1", "2", "3", "4", "5", "6"}


def test_the_svg_escapes_what_it_quotes_and_has_no_script_or_inline_style() -> None:
    tricky = Flow.model_validate({
        "flow": "x", "version": 1, "start": "a<b", "steps": {
            "a<b": {"type": "menu", "prompt": "k&<script>", "options": [
                {"label": "o", "next": "done"}]},
            "done": {"type": "end", "prompt": "bye"}}})
    drawn = svg(layout(tricky), title="<i>")
    assert "<script" not in drawn and "a<b" not in drawn and "a&lt;b" in drawn
    assert "&lt;i&gt;" in drawn
    assert not re.search(r"\sstyle=|\son\w+=", drawn)
