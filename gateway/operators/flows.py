"""Flows (operator, admin): the stored versions of each dialogue flow, what every screen
of one looks like on a phone, adding a version (checked by the validator of ``gateway
flows check``), and publishing one, an older one again included (a rollback).

The versions and publications are ``gateway.store.flow_versions``'; the content each
generation makes, and how processes learn of a publication, ``gateway.dialogue.library``.
Each addition and each publication is audited in the same transaction. No HTTP here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from gateway.content.catalogs import Content, Problem
from gateway.content.flowdef import BranchStep, EndStep, InputStep, MenuStep
from gateway.content.versions import FlowText, message_problems, messages_json
from gateway.dialogue import trial
from gateway.dialogue.engine import Engine, Frame, Rules, State
from gateway.dialogue.library import Library
from gateway.dialogue.validate import check_content, errors
from gateway.operators import audit
from gateway.operators.access import NotFound, Principal, Role, require
from gateway.privacy.keys import KeyRing
from gateway.store import flow_versions as store
from gateway.text.encoding import encoding_of, screen_length
from gateway.text.screens import DoesNotFit

MAX_DEFINITION = 64_000  # characters of YAML a version may hold
MAX_MESSAGE = 1_000  # characters of one catalog entry


class Invalid(ValueError):
    """A version the validator refuses (the API's 422): one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Conflict(ValueError):
    """A version that no longer goes with the flows published now (the API's 409)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Screen:
    step: str
    kind: str  # menu | input | end
    language: str
    page: int
    text: str  # as it goes over the air
    septets: int
    encoding: str
    budget: int

    @property
    def fits(self) -> bool:
        return self.septets <= self.budget

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "kind": self.kind, "language": self.language,
                "page": self.page, "text": self.text, "septets": self.septets,
                "encoding": self.encoding, "budget": self.budget, "fits": self.fits}


def _check_name(flow: str) -> None:
    if not flow or len(flow) > 64 or not all(c.islower() or c.isdigit() or c in "_-"
                                             for c in flow) or not flow[0].isalpha():
        raise NotFound(f"no flow {flow}")


def list_flows(conn: Connection, *, who: Principal, library: Library) -> list[dict[str, Any]]:
    """Each flow with its published version and its latest."""
    require(who, Role.operator)
    live = store.current_publications(conn)
    content = library.content(library.check(conn), conn)
    found = []
    for flow in store.flow_ids(conn):
        numbers = [v.version for v in store.versions_of(conn, flow=flow)]
        pub = live.get(flow)
        defined = content.flows.get(flow)
        title = _texts(content, defined.title) if defined and defined.title else {}
        found.append({
            "flow": flow, "title": title, "poll": defined.poll if defined else None,
            "published": pub.version if pub else None,
            "published_at": pub.published_at if pub else None,
            "latest": max(numbers) if numbers else None, "versions": len(numbers),
        })
    return found


def _texts(content: Content, key: str) -> dict[str, str]:
    return {lang: content.text(lang, key) for lang in content.languages
            if key in content.catalogs[lang].messages}


def read_flow(conn: Connection, *, who: Principal, library: Library, rules: Rules, flow: str,
              version: int | None = None) -> dict[str, Any]:
    """A flow: its versions, and the published one (or ``version``) with its definition,
    its own catalog entries, every screen per language and the validator's problems."""
    require(who, Role.operator)
    _check_name(flow)
    stored = store.versions_of(conn, flow=flow)
    if not stored:
        raise NotFound(f"no flow {flow}")
    pubs = store.publications_of(conn, flow=flow)
    live = pubs[-1].version if pubs else None
    shown_number = version if version is not None else (live or stored[-1].version)
    shown = next((s for s in stored if s.version == shown_number), None)
    if shown is None:
        raise NotFound(f"flow {flow} has no version {version}")
    text = FlowText(flow, shown.version, shown.definition, shown.messages)
    report = check_version(library, rules, text, conn=conn, stored=True)
    published_when: dict[int, datetime] = {}
    for pub in pubs:
        published_when[pub.version] = pub.published_at
    return {
        "flow": flow,
        "published": live,
        "version": shown.version,
        "versions": [{"version": s.version, "source": s.source, "created_by": s.created_by,
                      "created_at": s.created_at,
                      "last_published_at": published_when.get(s.version),
                      "published": s.version == live} for s in stored],
        "publications": [{"version": p.version, "generation": p.generation,
                          "published_by": p.published_by, "published_at": p.published_at}
                         for p in pubs],
        "definition": shown.definition,
        "messages": shown.messages,
        "screens": [s.as_json() for s in report.screens],
        "problems": [str(p) for p in report.problems],
    }


@dataclass(frozen=True)
class Report:
    """What the validator and the screens make of a version."""

    problems: list[Problem]  # errors then warnings
    screens: list[Screen]
    content: Content | None

    @property
    def errors(self) -> list[Problem]:
        return errors(self.problems)


def check_version(library: Library, rules: Rules, text: FlowText, *,
                  conn: Connection | None = None, generation: int | None = None,
                  laid_out: bool = True, stored: bool = False) -> Report:
    """``text`` checked with the flows published now (or at ``generation``): the
    validator's problems (errors first) and every screen of it per language. ``stored``:
    ``text`` is a stored version, and the verdict on the same versions is kept."""
    problems = message_problems(text)
    if problems:
        return Report(problems, [], None)
    content, problems = library.candidate(text, conn=conn, generation=generation,
                                          stored=stored)
    if content is None:
        return Report(problems, [], None)
    key = frozenset((f, flow.version) for f, flow in content.flows.items()) if stored \
        else None
    known = library.verdicts.get(key) if key is not None else None
    if known is not None:
        problems = known
    else:
        problems = sorted(set(problems + list(check_content(content, rules))))
        if key is not None:
            library.verdicts[key] = problems
            while len(library.verdicts) > library.keep:
                library.verdicts.popitem(last=False)
    mine = [p for p in problems if _about(p, text.flow)]
    others = [p for p in problems if not _about(p, text.flow)]
    ordered = errors(mine) + errors(others) + [p for p in problems if p.warning]
    shown = screens(Engine(content, rules), text.flow) if laid_out else []
    return Report(ordered, shown, content)


def _about(problem: Problem, flow: str) -> bool:
    return f"/{flow}.yml" in problem.where


def screens(engine: Engine, flow_id: str) -> list[Screen]:
    """Every screen of ``flow_id`` in each language, as a phone shows it (menus page by
    page; a commune menu as it is for the first cercle)."""
    content = engine.content
    flow = content.flows.get(flow_id)
    if flow is None:
        return []
    budget = engine.rules.budget
    found: list[Screen] = []
    first_cercle = content.communes.cercles[0].id if content.communes.cercles else ""
    for lang in content.languages:
        for name, step in flow.steps.items():
            if isinstance(step, BranchStep):
                continue
            results = {step.within: first_cercle} if isinstance(step, MenuStep) and \
                step.within else {}
            back = () if name == flow.start else (Frame(flow_id, flow.start, 0),)
            state = State(lang=lang, flow=flow_id, step=name, results={flow_id: results},
                          history=back)
            try:
                if isinstance(step, MenuStep):
                    texts = [p.text for p in engine.pages(state, step)]
                    kind = "menu"
                elif isinstance(step, InputStep):
                    line = "\n" + engine.layout(lang).back_line if back else ""
                    texts = [engine.say(lang, step.prompt) + line]
                    kind = "input"
                else:
                    assert isinstance(step, EndStep)
                    texts = [engine.say(lang, step.prompt)]
                    kind = "end"
            except (DoesNotFit, KeyError):
                texts, kind = [], "menu"
                if isinstance(step, MenuStep | InputStep | EndStep):
                    raw = _raw_prompt(engine, lang, step.prompt)
                    if raw is not None:
                        texts = [raw]
                        kind = step.type
            for page, shown in enumerate(texts):
                found.append(Screen(name, kind, lang, page, shown, screen_length(shown),
                                    encoding_of(shown), budget))
    return found


def _raw_prompt(engine: Engine, lang: str, key: str) -> str | None:
    try:
        return engine.say(lang, key)
    except KeyError:
        return None


def add_version(conn: Connection, *, who: Principal, library: Library, rules: Rules,
                flow: str, definition: str, messages: Mapping[str, Mapping[str, str]],
                now: datetime) -> tuple[int, list[str]]:
    """Store a new version of ``flow`` (not published) and return its number and the
    validator's warnings; :class:`Invalid` (nothing stored) when the validator finds a
    problem with it and the flows published now."""
    require(who, Role.operator)
    _check_name(flow)
    if len(definition) > MAX_DEFINITION:
        raise Invalid([f"definition: longer than {MAX_DEFINITION} characters"])
    if "\x00" in definition:
        raise Invalid(["definition: a NUL character"])
    for lang, entries in messages.items():
        for key, value in entries.items():
            if isinstance(value, str) and len(value) > MAX_MESSAGE:
                raise Invalid([f"messages/{lang}/{flow}.yml: key '{key}': longer than "
                               f"{MAX_MESSAGE} characters"])
    store.lock_generation(conn)  # additions and publications take turns
    generation = store.latest_generation(conn)
    text = FlowText(flow, 1, definition, {k: dict(v) for k, v in messages.items()})
    report = check_version(library, rules, text, conn=conn, generation=generation,
                           laid_out=False)
    if report.errors:
        raise Invalid([str(p) for p in report.errors])
    number = store.add_version(conn, flow=flow, definition=definition,
                               messages=messages_json(text.messages), digest=text.digest,
                               source="api", created_by=who.name, now=now)
    audit.record(conn, actor=who.name, action="flow.version", object_type="flow",
                 object_id=flow, details={"version": number}, now=now)
    return number, [str(p) for p in report.problems if p.warning]


def publish(conn: Connection, *, who: Principal, library: Library, rules: Rules, flow: str,
            version: int, now: datetime) -> dict[str, Any]:
    """Make ``version`` of ``flow`` the published one (an older one: a rollback), at once
    on every replica; :class:`NotFound` for no such version, :class:`Conflict` when it no
    longer goes with the other flows published now."""
    require(who, Role.operator)
    _check_name(flow)
    store.lock_generation(conn)
    stored = store.get_version(conn, flow=flow, version=version)
    if stored is None:
        raise NotFound(f"flow {flow} has no version {version}")
    before = store.current_publications(conn).get(flow)
    generation = store.latest_generation(conn)
    report = check_version(library, rules,
                           FlowText(flow, version, stored.definition, stored.messages),
                           conn=conn, generation=generation, laid_out=False, stored=True)
    if report.errors:
        raise Conflict([str(p) for p in report.errors])
    generation = store.publish(conn, flow=flow, version=version, by=who.name, now=now)
    audit.record(conn, actor=who.name, action="flow.publish", object_type="flow",
                 object_id=flow, details={"version": version, "generation": generation,
                                          "previous": before.version if before else None},
                 now=now)
    return {"flow": flow, "version": version, "generation": generation,
            "previous": before.version if before else None}


def diff(conn: Connection, *, who: Principal, flow: str, old: int, new: int) -> dict[str, Any]:
    """What changed from version ``old`` to ``new``: the definition as a unified diff,
    and each catalog entry added, removed or changed."""
    require(who, Role.operator)
    _check_name(flow)
    found = {s.version: s for s in store.get_versions(conn, wanted=[(flow, old), (flow, new)])}
    if old not in found or new not in found:
        raise NotFound(f"flow {flow} has no version {old if old not in found else new}")
    a, b = found[old], found[new]
    lines = list(difflib.unified_diff(a.definition.splitlines(), b.definition.splitlines(),
                                      f"version {old}", f"version {new}", lineterm=""))
    entries = []
    for lang in sorted(set(a.messages) | set(b.messages)):
        was, now_ = a.messages.get(lang, {}), b.messages.get(lang, {})
        for key in sorted(set(was) | set(now_)):
            if was.get(key) != now_.get(key):
                entries.append({"language": lang, "key": key, "old": was.get(key),
                                "new": now_.get(key)})
    return {"flow": flow, "old": old, "new": new, "definition": lines, "messages": entries}


def check_draft(conn: Connection, *, who: Principal, library: Library, rules: Rules,
                flow: str, definition: str, messages: Mapping[str, Mapping[str, str]]
                ) -> dict[str, Any]:
    """A draft checked and laid out, nothing stored: the editor's live preview."""
    require(who, Role.operator)
    _check_name(flow)
    text = FlowText(flow, 1, definition[:MAX_DEFINITION],
                    {k: dict(v) for k, v in messages.items()})
    report = check_version(library, rules, text, conn=conn)
    return {"problems": [str(p) for p in report.problems], "errors": len(report.errors),
            "screens": [s.as_json() for s in report.screens]}


def start_trial(conn: Connection, *, who: Principal, keys: KeyRing, flow: str,
                version: int | None) -> str:
    """A trial session's id (``gateway.dialogue.trial``) for the phone in the page: the
    published flows, or with ``version`` of ``flow`` (stored, published or not) in place
    of the published one. Nothing it answers is saved."""
    require(who, Role.operator)
    _check_name(flow)
    if version is not None and store.get_version(conn, flow=flow, version=version) is None:
        raise NotFound(f"flow {flow} has no version {version}")
    if version is None and not store.versions_of(conn, flow=flow):
        raise NotFound(f"no flow {flow}")
    return trial.session_id(keys, flow=flow, version=version or 0)
