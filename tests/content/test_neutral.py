"""Everything the gateway sends outside a resident's own open dialogue names no category,
no force and no abuse: acknowledgements (every flow's end screen, which SMS leaves in the
inbox), the answers to STOP, START and SUPPRIMER, the help with the keywords it
advertises, the warning sent before an SMS report or poll starts, and the menu over SMS.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.content.catalogs import Content, load
from gateway.content.flowdef import EndStep
from gateway.dialogue.engine import MAIN_FLOW, Engine, Rules
from gateway.dialogue.sms import SmsPolicy, SmsService
from gateway.dialogue.validate import SMS_KEYS
from gateway.text.encoding import fold
from tests.content.neutral_words import FORBIDDEN, report_labels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def content() -> Content:
    content, problems = load(REPO)
    assert not [p for p in problems if not p.warning]
    return content


def neutral_messages(content: Content) -> list[tuple[str, str, str]]:
    """(language, key, text as sent) for every message sent outside an open dialogue."""
    engine = Engine(content, Rules(params={"ussd_code": "*123#", "minutes": "5"}))
    over_sms = Engine(content, Rules(params={"ussd_code": "*123#"}, sms=True))
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
        # The menu over SMS stays in the inbox: its entries are neutral.
        found.append((lang, "main-menu (SMS)", over_sms.begin(MAIN_FLOW, lang).screen.text))
    return found


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
