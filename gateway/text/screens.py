"""Screen layout: fit a prompt and numbered options into pages within a septet budget.

A page holds, in order: part of the prompt, up to one option per free digit, then the
"next" item when more follows and the "back" item when going back is possible. Each page
fits the budget, and its options and navigation alone (its "bare" form) fit under a
one-line error of ``reserve`` septets: after an invalid answer the error takes the
prompt's place, so the resident still sees every choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.text.encoding import screen_length


class DoesNotFit(Exception):
    """A single line cannot fit a page even alone."""

    def __init__(self, line: str, length: int, room: int) -> None:
        self.line = line
        self.length = length
        self.room = room
        super().__init__(f"{length} septets where {room} fit: {line!r}")


@dataclass(frozen=True)
class Page:
    text: str
    bare: str  # the page without its prompt lines, shown under an error
    choices: tuple[int, ...]  # option indexes, in the order of their digits
    has_next: bool
    has_back: bool


@dataclass(frozen=True)
class Layout:
    budget: int
    reserve: int
    digits: tuple[str, ...]  # the digits options use on a page, e.g. 1..8
    next_line: str  # "9. Suite"
    back_line: str  # "0. Retour"


def option_line(digit: str, label: str) -> str:
    return f"{digit}. {label}"


def _size(lines: list[str]) -> int:
    return screen_length("\n".join(lines))


def _wrap(line: str, room: int) -> list[str]:
    """Split an over-long prompt line at spaces into pieces that fit ``room``."""
    if screen_length(line) <= room:
        return [line]
    pieces: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if screen_length(candidate) <= room:
            current = candidate
            continue
        if current:
            pieces.append(current)
        if screen_length(word) > room:
            raise DoesNotFit(word, screen_length(word), room)
        current = word
    if current:
        pieces.append(current)
    return pieces


def paginate(
    prompt: str, labels: list[str], layout: Layout, *, can_back: bool
) -> list[Page]:
    """Lay out ``prompt`` and the option ``labels`` into pages.

    Raises ``DoesNotFit`` when a single option (with the navigation it needs) or a single
    word of the prompt cannot fit an empty page.
    """
    budget = layout.budget
    bare_room = budget - layout.reserve
    footer_max = _size([layout.next_line, layout.back_line]) + 1
    prompt_lines: list[str] = []
    for line in prompt.split("\n"):
        prompt_lines.extend(_wrap(line, budget - footer_max))

    # Items: prompt lines (index None) then options (their index).
    items: list[tuple[str, int | None]] = [(line, None) for line in prompt_lines]
    items += [(label, i) for i, label in enumerate(labels)]

    pages: list[Page] = []
    pos = 0
    while pos < len(items) or not pages:
        back = can_back or bool(pages)
        head: list[str] = []  # prompt lines on this page
        body: list[str] = []  # option lines on this page
        choices: list[int] = []
        while pos < len(items):
            text, index = items[pos]
            if index is not None and len(choices) == len(layout.digits):
                break
            more = pos + 1 < len(items)
            footer = ([layout.next_line] if more else []) + ([layout.back_line] if back else [])
            if index is None:
                new_head, new_body = [*head, text], body
            else:
                new_head = head
                new_body = [*body, option_line(layout.digits[len(choices)], text)]
            fits = (_size([*new_head, *new_body, *footer]) <= budget
                    and _size([*new_body, *footer]) <= bare_room)
            if not fits:
                if not head and not body:
                    line = new_head[-1] if index is None else new_body[-1]
                    raise DoesNotFit(line, _size([line, *footer]),
                                     budget if index is None else bare_room)
                break
            head, body = new_head, new_body
            if index is not None:
                choices.append(index)
            pos += 1
        has_next = pos < len(items)
        footer = ([layout.next_line] if has_next else []) + ([layout.back_line] if back else [])
        pages.append(Page("\n".join(head + body + footer), "\n".join(body + footer),
                          tuple(choices), has_next, back))
    return pages
