"""A flow drawn as a diagram of its steps and branches: a layout (pure data) and the SVG
the dashboard serves (server-rendered: no script draws it).

Steps are laid out top to bottom by their distance from the start step, side by side
within a row; each arrow carries what leads along it (the option digits of a menu, a
branch's values, ``texte`` for typed input). Another flow a step leads to is a rounded box
of its own (``→ flow``); an arrow back up (``0``-style loops, a retry) curves on the side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gateway.content.flowdef import (
    BranchStep,
    EndStep,
    Flow,
    InputStep,
    MenuStep,
    flow_of_target,
    is_flow_target,
)

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 168, 46, 24, 44, 12
PER_ROW = 8  # a wider row wraps (the main menu's seven flows fit one)


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # menu | input | branch | end | flow
    title: str
    detail: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    back: bool  # leads to the same row or one above


@dataclass(frozen=True)
class Diagram:
    flow: str
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def _digits(indexes: list[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    parts: list[str] = []
    run: list[int] = []
    for i in indexes:
        if run and i != run[-1] + 1:
            parts.append(_run(run))
            run = []
        run.append(i)
    if run:
        parts.append(_run(run))
    return ", ".join(parts)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def _leads(step: MenuStep | InputStep | BranchStep | EndStep) -> list[tuple[str, str]]:
    """(target, label) for each way out of a step, one per target."""
    if isinstance(step, MenuStep):
        if step.options_from:
            return [(step.next, "liste")] if step.next else []
        by_target: dict[str, list[int]] = {}
        for i, option in enumerate(step.options, 1):
            target = option.next or step.next
            if target:
                by_target.setdefault(target, []).append(i)
        return [(t, _digits(ix)) for t, ix in by_target.items()]
    if isinstance(step, InputStep):
        return [(step.next, "texte")]
    if isinstance(step, BranchStep):
        cases: dict[str, list[str]] = {}
        for value, target in step.cases.items():
            cases.setdefault(target, []).append(value)
        found = [(t, "=" + "|".join(v)) for t, v in cases.items()]
        return [*found, (step.default, "sinon")]
    return []


def _detail(step: MenuStep | InputStep | BranchStep | EndStep) -> str:
    if isinstance(step, BranchStep):
        return f"si {step.result}"
    return step.prompt


def layout(flow: Flow) -> Diagram:
    """Rows by distance from the start (unreachable steps in a last row)."""
    depth: dict[str, int] = {flow.start: 0}
    queue = deque([flow.start])
    order: list[str] = []
    externals: dict[str, int] = {}
    while queue:
        name = queue.popleft()
        order.append(name)
        step = flow.steps.get(name)
        if step is None:
            continue
        for target, _ in _leads(step):
            if is_flow_target(target):
                externals.setdefault(target, depth[name] + 1)
            elif target in flow.steps and target not in depth:
                depth[target] = depth[name] + 1
                queue.append(target)
    last = max(depth.values(), default=0)
    for name in flow.steps:
        if name not in depth:
            last += 1
            depth[name] = last
            order.append(name)
    for target, row in externals.items():
        depth[target] = row
    rows: dict[int, list[str]] = {}
    for name in [*order, *externals]:
        if name in flow.steps or name in externals:
            rows.setdefault(depth[name], [])
            if name not in rows[depth[name]]:
                rows[depth[name]].append(name)
    # At most PER_ROW side by side (readable on a phone): a wider row wraps.
    lines = [names[i:i + PER_ROW] for _, names in sorted(rows.items())
             for i in range(0, len(names), PER_ROW)]
    widest = max((len(r) for r in lines), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    nodes: list[Node] = []
    for row, names in enumerate(lines):
        span = len(names) * NODE_W + (len(names) - 1) * GAP_X
        left = (width - span) // 2
        for i, name in enumerate(names):
            x, y = left + i * (NODE_W + GAP_X), MARGIN + row * (NODE_H + GAP_Y)
            if name in externals:
                nodes.append(Node(name, "flow", "→ " + flow_of_target(name), "autre flux", x, y))
            else:
                step = flow.steps[name]
                nodes.append(Node(name, step.type, name, _detail(step), x, y))
    edges = []
    for name, step in flow.steps.items():
        for target, label in _leads(step):
            if target in depth:
                edges.append(Edge(name, target, label, back=depth[target] <= depth[name]))
    height = MARGIN * 2 + max(1, len(lines)) * (NODE_H + GAP_Y) - GAP_Y
    return Diagram(flow.flow, width, height, tuple(nodes), tuple(edges))


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size - 1] + "…"


def svg(diagram: Diagram, *, title: str = "") -> str:
    """The diagram as an SVG document (classes for the stylesheet, no inline style)."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-diagram" '
           f'viewBox="0 0 {diagram.width} {diagram.height}" width="{diagram.width}" '
           f'height="{diagram.height}" role="img" aria-labelledby="d-{escape(diagram.flow)}">',
           f'<title id="d-{escape(diagram.flow)}">{escape(title or diagram.flow)}</title>',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker>'
           '</defs>']
    for edge in diagram.edges:
        a, b = diagram.node(edge.source), diagram.node(edge.target)
        if a.y == b.y and a.id != b.id:  # side by side: straight across
            left = a.x < b.x
            x1 = a.x + NODE_W if left else a.x
            x2 = b.x - 2 if left else b.x + NODE_W + 2
            y1 = y2 = a.y + NODE_H // 2
            path = f"M{x1},{y1} L{x2},{y2}"
            lx, ly = min(x1, x2) + 2, y1 - 4
        elif edge.back:
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x + NODE_W, b.y + NODE_H // 2
            bend = max(x1, x2) + 18
            path = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2 + 2},{y2}"
            lx, ly = bend - 4, (y1 + y2) // 2
        else:
            x1, y1 = a.x + NODE_W // 2, a.y + NODE_H
            x2, y2 = b.x + NODE_W // 2, b.y - 2
            mid = (y1 + y2) // 2
            path = f"M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}"
            lx, ly = (x1 + x2) // 2 + 4, mid + 4
        out.append(f'<path class="edge{" back" if edge.back else ""}" d="{path}" '
                   f'marker-end="url(#arrow)"/>')
        out.append(f'<text class="edge-label" x="{lx}" y="{ly}">{escape(_clip(edge.label, 16))}'
                   '</text>')
    for node in diagram.nodes:
        out.append(f'<g class="node node-{node.kind}" transform="translate({node.x},{node.y})">'
                   f'<rect width="{NODE_W}" height="{NODE_H}" '
                   f'rx="{14 if node.kind == "flow" else 4}"/>'
                   f'<text class="node-title" x="8" y="18">{escape(_clip(node.title, 20))}'
                   f'<tspan class="node-kind"> · {escape(node.kind)}</tspan></text>'
                   f'<text class="node-detail" x="8" y="36">{escape(_clip(node.detail, 24))}</text>'
                   '</g>')
    out.append("</svg>")
    return "\n".join(out)
