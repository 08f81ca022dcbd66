"""``gateway flows check``: prove flows and catalogs sound before they reach a phone.

Reported, one line each, naming file, step, key and language: unknown step types and
fields, unknown targets, unreachable steps, dead ends, keys missing in a language,
placeholders that differ between languages, screens that cannot fit the budget even
alone on a page (with worst-case placeholder values), and characters left outside GSM-7
after transliteration. Warnings (unused keys, long SMS questions) do not fail the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from gateway.content.catalogs import Content, Problem, load
from gateway.content.flowdef import (
    Action,
    BranchStep,
    EndStep,
    Flow,
    InputStep,
    MenuStep,
    flow_of_target,
    is_flow_target,
    step_keys,
    step_targets,
)
from gateway.dialogue.engine import LANGUAGE_FLOW, MAIN_FLOW, Engine, Rules
from gateway.text.encoding import GSM7_SINGLE, non_gsm7_chars, screen_length, transliterate
from gateway.text.screens import DoesNotFit, paginate

# Keys the gateway itself shows, outside any flow.
SYSTEM_KEYS = (
    "nav-next", "nav-back", "list-other",
    "error-choice", "error-empty", "error-too-long", "error-too-short", "error-digits",
    "error-not-digits",
    "resume-offer", "resume-continue", "resume-restart",
    "apology",
    # The SMS channel's own messages.
    "sms-help", "sms-stopped", "sms-started", "sms-erase-confirm", "sms-erased",
    "sms-erase-cancelled", "sms-cancelled",
)
# Keys of the SMS channel; checked when present, each must fit one segment.
SMS_KEYS = (
    "sms-help", "sms-stopped", "sms-started", "sms-erase-confirm", "sms-erased",
    "sms-erase-cancelled", "sms-cancelled",
)
# Keys of the pages a radio studio shows (the on-air page: gateway.operators.campaigns).
PAGE_KEY_PREFIX = "onair-"
ERROR_KEYS = ("error-too-long", "error-too-short", "error-digits", "error-not-digits",
              "error-empty")


def check(root: Path, rules: Rules) -> list[Problem]:
    """Every problem in the content folder ``root``, sorted, errors and warnings."""
    content, problems = load(root)
    problems += list(check_content(content, rules))
    return sorted(set(problems))


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if not p.warning]


def check_content(content: Content, rules: Rules) -> Iterable[Problem]:
    yield from _check_catalogs(content)
    yield from _check_flows(content)
    if not errors(list(_check_catalogs(content))) and content.catalogs:
        yield from _check_screens(content, rules)


# --- catalogs ----------------------------------------------------------------------


def _check_catalogs(content: Content) -> Iterable[Problem]:
    catalogs = content.catalogs
    languages = content.languages
    all_keys = sorted({k for c in catalogs.values() for k in c.messages})
    in_flows = {k for flow in content.flows.values() for k in _flow_keys(flow)}
    for key in all_keys:
        having = [lang for lang in languages if key in catalogs[lang].messages]
        first = catalogs[having[0]]
        for lang in languages:
            # A key a flow uses is reported at its step, naming the step.
            if key not in catalogs[lang].messages and key not in in_flows:
                yield Problem(f"messages/{lang}",
                              f"key '{key}' missing in {lang} (defined in {first.files[key]})")
        for lang in having[1:]:
            if catalogs[lang].placeholders(key) != first.placeholders(key):
                yield Problem(
                    catalogs[lang].files[key],
                    f"key '{key}': placeholders {_fmt(catalogs[lang].placeholders(key))} in "
                    f"{lang} differ from {_fmt(first.placeholders(key))} in {first.language}",
                )
        for lang in having:
            for name in sorted(catalogs[lang].placeholders(key)):
                if name not in content.worst_cases:
                    yield Problem(catalogs[lang].files[key],
                                  f"key '{key}': placeholder {{{name}}} has no longest value "
                                  "in messages/placeholders.yml")
    for lang in languages:
        for key in SYSTEM_KEYS:
            if key not in catalogs[lang].messages:
                yield Problem(f"messages/{lang}", f"key '{key}' missing in {lang} "
                              "(the gateway shows it outside any flow)")
    used = in_flows | set(SYSTEM_KEYS) | set(SMS_KEYS)
    for key in all_keys:
        if key not in used and not key.startswith(PAGE_KEY_PREFIX):
            lang = next(lang for lang in languages if key in catalogs[lang].messages)
            yield Problem(catalogs[lang].files[key], f"key '{key}' is not used by any flow",
                          warning=True)
    for lang in languages:
        for key, text in catalogs[lang].messages.items():
            bad = non_gsm7_chars(transliterate(text, lang))
            if bad:
                shown = " ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in bad)
                yield Problem(catalogs[lang].files[key],
                              f"key '{key}': {shown} not GSM-7 after transliteration in {lang}")
    for cercle in content.communes.cercles:
        for name in [cercle.name, *(c.name for c in cercle.communes)]:
            bad = non_gsm7_chars(transliterate(name, "fr"))
            if bad:
                yield Problem("flows/lists/communes.yml",
                              f"'{name}': {' '.join(bad)} not GSM-7 after transliteration")


def _fmt(names: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(names)) + "}" if names else "none"


def _flow_keys(flow: Flow) -> list[str]:
    keys = [k for step in flow.steps.values() for k in step_keys(step)]
    if flow.title:
        keys.append(flow.title)
    if flow.sms_confirm:
        keys.append(flow.sms_confirm)
    return keys


# --- flows -------------------------------------------------------------------------


def _check_flows(content: Content) -> Iterable[Problem]:
    flows = content.flows
    for required in (MAIN_FLOW, LANGUAGE_FLOW):
        if required not in flows:
            yield Problem("flows", f"flow '{required}' missing ({required}.yml)")
    for flow_id, flow in flows.items():
        where = content.flow_files[flow_id]
        yield from _check_flow(content, flow, where)


def _check_flow(content: Content, flow: Flow, where: str) -> Iterable[Problem]:
    steps = flow.steps
    if flow.start not in steps:
        yield Problem(where, f"start step '{flow.start}' does not exist")
        return
    saved = {s.save_as for s in steps.values() if isinstance(s, MenuStep | InputStep) and s.save_as}
    for name, step in steps.items():
        at = f"{where}: step '{name}'"
        for target in step_targets(step):
            if is_flow_target(target):
                if flow_of_target(target) not in content.flows:
                    yield Problem(at, f"target '{target}': no such flow")
            elif target not in steps:
                yield Problem(at, f"target '{target}': no such step")
        if isinstance(step, MenuStep):
            for i, option in enumerate(step.options, 1):
                if not (option.next or step.next):
                    yield Problem(at, f"option {i} ('{option.label}') leads nowhere (dead end)")
            if step.within and step.within not in saved:
                yield Problem(at, f"within '{step.within}': no step saves it")
            if step.action is Action.set_language:
                for option in step.options:
                    if option.value not in content.catalogs:
                        yield Problem(at, f"option value '{option.value}' is not a language "
                                      "with a catalog")
        if isinstance(step, BranchStep) and step.result not in saved:
            yield Problem(at, f"branch on '{step.result}': no step saves it")
        action = getattr(step, "action", None)
        if action is Action.save_poll and not flow.poll:
            yield Problem(at, "save_poll needs the flow's poll id (poll: ...)")
        for key in step_keys(step):
            for lang in content.languages:
                if key not in content.catalogs[lang].messages:
                    yield Problem(at, f"key '{key}' missing in {lang}")
    for key in [k for k in (flow.title, flow.sms_confirm) if k]:
        for lang in content.languages:
            if key not in content.catalogs[lang].messages:
                yield Problem(where, f"key '{key}' missing in {lang}")
    for lang in flow.keywords:
        if lang not in content.catalogs:
            yield Problem(where, f"keywords for '{lang}', which has no catalog")

    reachable = _reachable(flow)
    for name in steps:
        if name not in reachable:
            yield Problem(f"{where}: step '{name}'", "unreachable from the start step")
    finishing = _can_finish(flow)
    for name in reachable:
        if name not in finishing:
            yield Problem(f"{where}: step '{name}'",
                          "dead end: no end step or other flow can be reached from it")


def _local_targets(step: MenuStep | InputStep | BranchStep | EndStep) -> list[str]:
    return [t for t in step_targets(step) if not is_flow_target(t)]


def _reachable(flow: Flow) -> set[str]:
    seen: set[str] = set()
    todo = [flow.start]
    while todo:
        name = todo.pop()
        if name in seen or name not in flow.steps:
            continue
        seen.add(name)
        todo.extend(_local_targets(flow.steps[name]))
    return seen


def _can_finish(flow: Flow) -> set[str]:
    """Steps from which an end step or another flow is reachable."""
    done = {
        name for name, step in flow.steps.items()
        if isinstance(step, EndStep) or any(is_flow_target(t) for t in step_targets(step))
    }
    changed = True
    while changed:
        changed = False
        for name, step in flow.steps.items():
            if name not in done and any(t in done for t in _local_targets(step)):
                done.add(name)
                changed = True
    return done


# --- screens -----------------------------------------------------------------------


def _worst_rules(content: Content, rules: Rules) -> Rules:
    """Each placeholder at the longer of its configured value and its declared worst case:
    content that passes here still fits when a deployment changes the code it quotes."""
    params = dict(content.worst_cases)
    for name, value in rules.params.items():
        if len(value) > len(params.get(name, "")):
            params[name] = value
    return replace(rules, params=params)


def _check_screens(content: Content, rules: Rules) -> Iterable[Problem]:
    engine = Engine(content, _worst_rules(content, rules))
    budget = rules.budget
    for lang in content.languages:
        layout = engine.layout(lang)
        messages = content.catalogs[lang].messages
        if any(k not in messages for k in SYSTEM_KEYS):
            continue
        for flow_id, flow in content.flows.items():
            where = content.flow_files[flow_id]
            for name, step in flow.steps.items():
                at = f"{where}: step '{name}'"
                if any(k not in messages for k in step_keys(step)):
                    continue
                if isinstance(step, MenuStep):
                    prompt = engine.say(lang, step.prompt)
                    for label_sets in _label_sets(engine, step, lang):
                        try:
                            paginate(prompt, label_sets, layout, can_back=True)
                        except DoesNotFit as exc:
                            yield Problem(at, f"key '{step.prompt}' in {lang}: cannot fit a "
                                          f"{budget}-septet screen even alone on a page "
                                          f"({exc.length} septets where {exc.room} fit: "
                                          f"{exc.line!r})")
                elif isinstance(step, InputStep):
                    screen = engine.say(lang, step.prompt) + "\n" + layout.back_line
                    worst_error = max(
                        (screen_length(engine.say(lang, k)) for k in ERROR_KEYS), default=0
                    )
                    size = screen_length(screen) + worst_error + 1
                    if size > budget:
                        yield Problem(at, f"key '{step.prompt}' in {lang}: {size} septets with "
                                      f"its longest error, budget {budget}")
                elif isinstance(step, EndStep):
                    size = screen_length(engine.say(lang, step.prompt))
                    if size > budget:
                        yield Problem(at, f"key '{step.prompt}' in {lang}: end screen of "
                                      f"{size} septets, budget {budget}")
        resume = "\n".join([
            engine.say(lang, "error-choice"), engine.say(lang, "resume-offer"),
            "1. " + engine.say(lang, "resume-continue"), "2. " + engine.say(lang, "resume-restart"),
        ])
        if screen_length(resume) > budget:
            yield Problem(f"messages/{lang}", f"the resume offer takes {screen_length(resume)} "
                          f"septets with its error line, budget {budget}")
        apology = screen_length(engine.say(lang, "apology"))
        if apology > budget:
            yield Problem(f"messages/{lang}", f"key 'apology': {apology} septets, budget {budget}")
        for key in SMS_KEYS:
            if key in messages:
                cost = screen_length(engine.say(lang, key))
                if cost > GSM7_SINGLE:
                    yield Problem(content.catalogs[lang].files[key],
                                  f"key '{key}' in {lang}: {cost} septets, more than one SMS",
                                  warning=True)


def _label_sets(engine: Engine, step: MenuStep, lang: str) -> list[list[str]]:
    """Each distinct option list a menu can show (one per cercle for commune menus)."""
    other = engine.say(lang, "list-other")
    if step.options_from == "cercles":
        return [[engine.name(c.name) for c in engine.content.communes.cercles] + [other]]
    if step.options_from == "communes":
        sets = [[engine.name(m.name) for m in c.communes] + [other]
                for c in engine.content.communes.cercles]
        return sets or [[other]]
    sets = [[engine.say(lang, o.label) for o in step.options]]
    if any(o.sms_label for o in step.options):  # the SMS menu's neutral entries
        sets.append([engine.say(lang, o.sms_label or o.label) for o in step.options])
    return sets

