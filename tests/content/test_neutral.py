"""Everything the gateway sends outside a resident's own open dialogue names no category,
no force and no abuse: acknowledgements (every flow's end screen, which SMS leaves in the
inbox), the answers to STOP, START and SUPPRIMER, the help with the keywords it
advertises, and the warning sent before an SMS report starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.content.catalogs import Content, load
from gateway.content.flowdef import EndStep, MenuStep
from gateway.dialogue.engine import Engine, Rules
from gateway.dialogue.sms import SmsPolicy, SmsService
from gateway.dialogue.validate import SMS_KEYS
from gateway.text.encoding import fold

REPO = Path(__file__).resolve().parents[2]

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


@pytest.fixture(scope="module")
def content() -> Content:
    content, problems = load(REPO)
    assert not [p for p in problems if not p.warning]
    return content


def neutral_messages(content: Content) -> list[tuple[str, str, str]]:
    """(language, key, text as sent) for every message sent outside an open dialogue."""
    engine = Engine(content, Rules(params={"ussd_code": "*123#", "minutes": "5"}))
    sms = SmsService(db=None, keys=None, engine=engine, policy=SmsPolicy(),  # type: ignore[arg-type]
                     outbox_policy=None)  # type: ignore[arg-type]
    found = []
    for lang in content.languages:
        for key in SMS_KEYS:
            text = engine.say(lang, key, keywords=sms.keyword_list(lang))
            found.append((lang, key, text))
        for flow in content.flows.values():
            for step in flow.steps.values():
                if isinstance(step, EndStep):
                    found.append((lang, step.prompt, engine.say(lang, step.prompt)))
            if flow.sms_confirm:
                found.append((lang, flow.sms_confirm, engine.say(lang, flow.sms_confirm)))
        found.append((lang, "resume-offer", engine.say(lang, "resume-offer")))
    return found


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


def test_there_are_neutral_messages_to_check(content: Content) -> None:
    messages = neutral_messages(content)
    keys = {key for _, key, _ in messages}
    assert {"ack-received", "ack-answer", "sms-help", "sms-stopped", "sms-erased",
            "sms-report-warning"} <= keys
    assert {lang for lang, _, _ in messages} == {"fr", "bm", "ff"}
    assert len(messages) >= 3 * 15


def test_no_neutral_message_names_a_force_a_category_or_an_abuse(content: Content) -> None:
    labels = report_labels(content)
    assert "gendarmerie" in labels and "argent exige" in labels  # the check can bite
    offences = []
    for lang, key, text in neutral_messages(content):
        folded = fold(text)
        words = set(folded.split())
        for word in sorted(FORBIDDEN & words):
            offences.append(f"{lang} {key}: forbidden word '{word}' in {text!r}")
        for label in sorted(labels):
            if re.search(rf"\b{re.escape(label)}\b", folded):
                offences.append(f"{lang} {key}: report label '{label}' in {text!r}")
    assert offences == []


def test_advertised_keywords_are_neutral(content: Content) -> None:
    for flow in content.flows.values():
        for lang, keywords in flow.keywords.items():
            for keyword in keywords:
                assert fold(keyword) not in FORBIDDEN, (flow.flow, lang, keyword)
                assert not set(fold(keyword).split()) & FORBIDDEN
