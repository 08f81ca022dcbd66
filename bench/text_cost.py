"""What transliteration saves: every catalog message longer than 70 characters (the UCS-2
single-segment limit), placeholders at their longest values, sent GSM-safe against the
same text sent as written in UCS-2.

    .venv/bin/python -m bench.text_cost [CONTENT_DIR]
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.content.catalogs import PLACEHOLDER, load
from gateway.text.encoding import UCS2_PART, UCS2_SINGLE, outbound, sms_cost, ucs2_units


@dataclass(frozen=True)
class Cost:
    language: str
    key: str
    characters: int
    encoding: str  # of the GSM-safe form
    gsm7_segments: int
    ucs2_segments: int


def catalog_costs(root: Path) -> list[Cost]:
    content, _ = load(root)
    costs = []
    for language in content.languages:
        for key, raw in sorted(content.catalogs[language].messages.items()):
            text = PLACEHOLDER.sub(lambda m: content.worst_cases.get(m.group(1), m.group(0)),
                                   raw)
            if len(text) <= UCS2_SINGLE:
                continue
            units = ucs2_units(text)
            as_ucs2 = 1 if units <= UCS2_SINGLE else math.ceil(units / UCS2_PART)
            sent = sms_cost(outbound(text, language))
            costs.append(Cost(language, key, len(text), sent.encoding, sent.segments, as_ucs2))
    return costs


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    costs = catalog_costs(root)
    print(f"{'lang':4} {'key':28} {'chars':>5} {'sent as':7} {'segs':>4} {'UCS-2':>5}")
    for c in costs:
        print(f"{c.language:4} {c.key:28} {c.characters:5} {c.encoding:7} "
              f"{c.gsm7_segments:4} {c.ucs2_segments:5}")
    for language in [*sorted({c.language for c in costs}), "all"]:
        mine = [c for c in costs if language in ("all", c.language)]
        sent = sum(c.gsm7_segments for c in mine)
        ucs2 = sum(c.ucs2_segments for c in mine)
        print(f"{language}: {len(mine)} messages, {sent} segments sent against {ucs2} as "
              f"UCS-2: ratio {sent / ucs2:.2f} (target <= 0.50)")


if __name__ == "__main__":
    main()
