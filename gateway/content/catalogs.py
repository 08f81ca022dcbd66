"""Content: flows, message catalogs, the communes list and placeholder worst cases.

Content lives in a folder holding ``flows/`` and ``messages/`` (brief: "Content location"):

    flows/<flow>.yml              one dialogue flow each
    flows/lists/communes.yml      cercles and their communes (proper nouns, not translated)
    messages/<lang>/<name>.yml    key -> text; every language has the same keys
    messages/placeholders.yml     placeholder -> its longest value, for the validator

Loading never raises on bad content: it returns what it could read plus one ``Problem``
per defect, so ``gateway flows check`` can name them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.content.flowdef import Flow

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
PACKAGE_CONTENT = Path(__file__).parents[1] / "_content"
SOURCE_CONTENT = Path(__file__).parents[2]


@dataclass(frozen=True, order=True)
class Problem:
    """One defect in the content: where it is and what is wrong."""

    where: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{prefix}{self.where}: {self.message}"


class Commune(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str
    uncertain: bool = False


class Cercle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str
    communes: tuple[Commune, ...]


class CommuneList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    note: str = ""
    cercles: tuple[Cercle, ...]

    def cercle(self, cercle_id: str) -> Cercle | None:
        return next((c for c in self.cercles if c.id == cercle_id), None)


@dataclass(frozen=True)
class Catalog:
    """One language's messages: key -> text (standard orthography) and key -> file."""

    language: str
    messages: Mapping[str, str]
    files: Mapping[str, str]

    def placeholders(self, key: str) -> frozenset[str]:
        return frozenset(PLACEHOLDER.findall(self.messages.get(key, "")))


@dataclass(frozen=True)
class Content:
    root: Path
    flows: Mapping[str, Flow]
    flow_files: Mapping[str, str]
    catalogs: Mapping[str, Catalog]
    communes: CommuneList
    worst_cases: Mapping[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages in display order: French first, then the others by code."""
        return tuple(sorted(self.catalogs, key=lambda lang: (lang != "fr", lang)))

    def text(self, language: str, key: str) -> str:
        return self.catalogs[language].messages[key]


def locate(configured: Path | None) -> Path:
    """The content folder: the setting, else the current directory when it has ``flows/``,
    else the content shipped in the package (or the source checkout it was installed from)."""
    if configured is not None:
        return configured
    cwd = Path.cwd()
    if (cwd / "flows").is_dir():
        return cwd
    if (PACKAGE_CONTENT / "flows").is_dir():
        return PACKAGE_CONTENT
    return SOURCE_CONTENT


def _read_yaml(path: Path, root: Path, problems: list[Problem]) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).replace("\n", " ")
        problems.append(Problem(_rel(path, root), f"cannot read: {detail}"))
        return None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _validation_lines(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        yield f"{loc}: {error['msg']}" if loc else str(error["msg"])


def _flow_problems(where: str, exc: ValidationError) -> Iterator[Problem]:
    """One line per defect, naming the step when the defect is in one."""
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "union_tag_invalid":
            tag = (error.get("ctx") or {}).get("tag", "?")
            message = f"unknown step type '{tag}' (menu, input, branch or end)"
        elif error["type"] == "union_tag_not_found":
            message = "no step type (type: menu, input, branch or end)"
        else:
            message = str(error["msg"])
        if len(loc) > 1 and loc[0] == "steps":
            # loc is steps.<name>[.<step type>].<field>...: the type tag is not a field.
            fields = loc[3:] if len(loc) > 2 and loc[2] in _STEP_TYPES else loc[2:]
            at = f"{'.'.join(fields)}: " if fields else ""
            yield Problem(f"{where}: step '{loc[1]}'", f"{at}{message}")
        else:
            yield Problem(where, f"{'.'.join(loc)}: {message}" if loc else message)


_STEP_TYPES = ("menu", "input", "branch", "end")


def _load_flows(root: Path, problems: list[Problem]) -> tuple[dict[str, Flow], dict[str, str]]:
    flows: dict[str, Flow] = {}
    files: dict[str, str] = {}
    for path in sorted((root / "flows").glob("*.yml")):
        where = _rel(path, root)
        data = _read_yaml(path, root, problems)
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(Problem(where, "a flow file holds a mapping"))
            continue
        try:
            flow = Flow.model_validate(data)
        except ValidationError as exc:
            problems.extend(_flow_problems(where, exc))
            continue
        if flow.flow != path.stem:
            problems.append(Problem(where, f"flow id '{flow.flow}' differs from the file name"))
        if flow.flow in flows:
            problems.append(Problem(where, f"flow id '{flow.flow}' is also in {files[flow.flow]}"))
            continue
        flows[flow.flow] = flow
        files[flow.flow] = where
    return flows, files


def _load_catalogs(root: Path, problems: list[Problem]) -> dict[str, Catalog]:
    catalogs: dict[str, Catalog] = {}
    messages_dir = root / "messages"
    if not messages_dir.is_dir():
        problems.append(Problem("messages", "folder missing"))
        return catalogs
    for lang_dir in sorted(p for p in messages_dir.iterdir() if p.is_dir()):
        lang = lang_dir.name
        messages: dict[str, str] = {}
        files: dict[str, str] = {}
        for path in sorted(lang_dir.glob("*.yml")):
            where = _rel(path, root)
            data = _read_yaml(path, root, problems)
            if data is None:
                continue
            if not isinstance(data, dict):
                problems.append(Problem(where, "a catalog file holds a mapping of key: text"))
                continue
            for key, text in data.items():
                if not isinstance(key, str) or not isinstance(text, str):
                    problems.append(Problem(where, f"key '{key}': text must be a string"))
                    continue
                if key in messages:
                    problems.append(
                        Problem(where, f"key '{key}' is also defined in {files[key]}")
                    )
                    continue
                messages[key] = text.strip("\n")
                files[key] = where
        catalogs[lang] = Catalog(lang, messages, files)
    if not catalogs:
        problems.append(Problem("messages", "no language folder (messages/fr, messages/bm)"))
    return catalogs


def _load_communes(root: Path, problems: list[Problem]) -> CommuneList:
    path = root / "flows" / "lists" / "communes.yml"
    empty = CommuneList(version=1, cercles=())
    if not path.exists():
        return empty
    data = _read_yaml(path, root, problems)
    if data is None:
        return empty
    try:
        return CommuneList.model_validate(data)
    except ValidationError as exc:
        for line in _validation_lines(exc):
            problems.append(Problem(_rel(path, root), line))
        return empty


def _load_worst_cases(root: Path, problems: list[Problem]) -> dict[str, str]:
    path = root / "messages" / "placeholders.yml"
    if not path.exists():
        return {}
    data = _read_yaml(path, root, problems)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int) for k, v in data.items()
    ):
        problems.append(Problem(_rel(path, root), "holds placeholder: longest value"))
        return {}
    return {k: str(v) for k, v in data.items()}


def load(root: Path) -> tuple[Content, list[Problem]]:
    """Read a content folder. Problems are returned, never raised."""
    problems: list[Problem] = []
    if not (root / "flows").is_dir():
        problems.append(Problem(str(root), "has no flows/ folder"))
    flows, flow_files = _load_flows(root, problems)
    catalogs = _load_catalogs(root, problems)
    communes = _load_communes(root, problems)
    worst = _load_worst_cases(root, problems)
    content = Content(root, flows, flow_files, catalogs, communes, worst)
    return content, problems


class ContentError(Exception):
    """The content folder has problems that stop the gateway from starting."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
