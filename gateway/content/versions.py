"""Flow versions as data: what a version holds, and the content a set of versions makes.

A version is a flow's definition (the YAML text, as written) and the flow's own catalog
entries (``{language: {key: text}}``: the keys of ``messages/<lang>/<flow>.yml``). The
rest of the content location (the shared catalogs ``common.yml`` and ``sms.yml``, the
communes list, the placeholders' worst cases) is the *base*, read from the files at
start. :func:`compose` puts a base and one version of each flow together into the
``Content`` the engine and the validator run on. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.content.catalogs import Catalog, Content, Problem, _flow_problems
from gateway.content.flowdef import Flow

Messages = Mapping[str, Mapping[str, str]]  # language -> key -> text


@dataclass(frozen=True)
class FlowText:
    """One version of a flow as stored: its definition text and its own entries."""

    flow: str
    version: int
    definition: str
    messages: Messages

    @property
    def digest(self) -> str:
        return digest(self.definition, self.messages)


def digest(definition: str, messages: Messages) -> str:
    body = json.dumps({"definition": definition, "messages": messages},
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def messages_json(messages: Messages) -> str:
    return json.dumps({lang: dict(sorted(entries.items()))
                       for lang, entries in sorted(messages.items())},
                      ensure_ascii=False, separators=(",", ":"))


def flow_file(flow_id: str) -> str:
    return f"flows/{flow_id}.yml"


def catalog_file(lang: str, flow_id: str) -> str:
    return f"messages/{lang}/{flow_id}.yml"


def own_messages(content: Content, flow_id: str) -> dict[str, dict[str, str]]:
    """The catalog entries of ``content`` that belong to ``flow_id`` (its own file's)."""
    found: dict[str, dict[str, str]] = {}
    for lang, catalog in content.catalogs.items():
        where = catalog_file(lang, flow_id)
        found[lang] = {k: t for k, t in catalog.messages.items() if catalog.files[k] == where}
    return found


def base_of(content: Content) -> Content:
    """``content`` without its flows and their own entries: what every version shares."""
    own = {catalog_file(lang, f) for lang in content.catalogs for f in content.flows}
    catalogs = {
        lang: Catalog(lang,
                      {k: t for k, t in c.messages.items() if c.files[k] not in own},
                      {k: w for k, w in c.files.items() if w not in own})
        for lang, c in content.catalogs.items()
    }
    return replace(content, flows={}, flow_files={}, catalogs=catalogs)


def parse(text: FlowText) -> tuple[Flow | None, list[Problem]]:
    """The flow a version defines (its ``version`` the stored number), or its problems."""
    where = flow_file(text.flow)
    try:
        data: Any = yaml.safe_load(text.definition)
    except yaml.YAMLError as exc:
        return None, [Problem(where, "cannot read: " + str(exc).replace("\n", " "))]
    if not isinstance(data, dict):
        return None, [Problem(where, "a flow definition holds a mapping")]
    if "version" not in data:
        data = {**data, "version": text.version}
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        return None, list(_flow_problems(where, exc))
    if flow.flow != text.flow:
        return None, [Problem(where, f"flow id '{flow.flow}' differs from '{text.flow}'")]
    return flow.model_copy(update={"version": text.version}), []


def message_problems(text: FlowText) -> list[Problem]:
    """Entries that are not ``{language: {key: text}}`` of strings."""
    problems: list[Problem] = []
    for lang, entries in text.messages.items():
        where = catalog_file(lang, text.flow)
        if not isinstance(entries, Mapping):
            problems.append(Problem(where, "holds key: text"))
            continue
        for key, value in entries.items():
            if not isinstance(key, str) or not isinstance(value, str):
                problems.append(Problem(where, f"key '{key}': text must be a string"))
            elif "\x00" in value:
                problems.append(Problem(where, f"key '{key}': a NUL character"))
    return problems


def compose(base: Content, versions: Mapping[str, tuple[Flow, FlowText]]) -> tuple[
        Content, list[Problem]]:
    """``base`` with one version of each flow of ``versions`` (already parsed): their
    definitions and their own entries. A key a version defines that the base or another
    flow also defines is a problem (the first one read keeps it)."""
    problems: list[Problem] = []
    messages = {lang: dict(c.messages) for lang, c in base.catalogs.items()}
    files = {lang: dict(c.files) for lang, c in base.catalogs.items()}
    for flow_id in sorted(versions):
        _, text = versions[flow_id]
        for lang, entries in sorted(text.messages.items()):
            where = catalog_file(lang, flow_id)
            into, at = messages.setdefault(lang, {}), files.setdefault(lang, {})
            for key, value in entries.items():
                if key in into:
                    problems.append(Problem(where, f"key '{key}' is also defined in {at[key]}"))
                    continue
                into[key] = value.strip("\n")
                at[key] = where
    catalogs = {lang: Catalog(lang, messages[lang], files[lang]) for lang in messages}
    flows = {flow_id: flow for flow_id, (flow, _) in versions.items()}
    content = replace(base, flows=flows, flow_files={f: flow_file(f) for f in flows},
                      catalogs=catalogs)
    return content, problems
