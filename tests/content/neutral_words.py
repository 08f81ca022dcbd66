"""The words nothing outside a resident's confirmed dialogue may contain: a list of forces,
categories and abuses in the three languages, and the report flow's own labels for what
happened and who did it, read from the catalogs."""

from __future__ import annotations

import re

from gateway.content.catalogs import Content
from gateway.content.flowdef import MenuStep
from gateway.text.encoding import fold

# Folded (case, accents and Bambara spellings collapsed by gateway.text.fold).
FORBIDDEN = {
    "signalement", "signaler", "signale", "plainte", "denonciation", "temoignage",
    "police", "policier", "polisi", "gendarmerie", "gendarme", "zandaramu", "zandarameri",
    "armee", "militaire", "soldat", "sorodasi", "fama", "fds", "garde", "garadi", "milice",
    "dozo", "donso", "kelebolo", "kelejama", "larame",
    "abus", "violence", "arrestation", "detention", "racket", "extorsion", "torture",
    "disparu", "disparition", "menace", "insulte", "vol", "confiscation", "gosili",
    "mine", "minèni", "sonyali", "jiji", "neni", "toro", "barrage", "barazi",
    # Fulfulde (folded: ɓ ɗ ƴ as b d y)
    "sordaasiibe", "sordaasi", "sanndarmaaji", "poliis", "konu", "fedde",
    "piyol", "torra", "nanngol", "huli", "kuddi", "wujjo", "yettugol", "majjudo",
}


def report_labels(content: Content) -> set[str]:
    """The report flow's own words for what happened and who did it, in every language."""
    report = content.flows["report"]
    labels = set()
    for name in ("category", "force"):
        step = report.steps[name]
        assert isinstance(step, MenuStep)
        for option in step.options:
            for lang in content.languages:
                text = fold(content.text(lang, option.label))
                if text not in {"autre", "were", "ko were", "je ne sais pas", "n t a don",
                                "goddum", "goddo", "mi anndaa"}:
                    labels.add(text)
    return labels


def offences(content: Content, text: str) -> list[str]:
    """The forbidden words and report labels ``text`` contains (folded)."""
    folded = fold(text)
    found = sorted(FORBIDDEN & set(folded.split()))
    found += [label for label in sorted(report_labels(content))
              if re.search(rf"\b{re.escape(label)}\b", folded)]
    return found
