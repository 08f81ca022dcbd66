"""The README is the contract a deployer reads: every setting is in its table with its
real default, every command is listed, and the quick start is the two commands CI uses.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.cli import _parser
from gateway.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.nodb

README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def settings_table() -> dict[str, str]:
    rows = re.findall(r"^\| `(GATEWAY_[A-Z0-9_]+)` \| ([^|]+) \|", section("Settings"), re.M)
    return {name: default.strip() for name, default in rows}


def shown(default: Any) -> str:
    if default is None:
        return "unset"
    value = getattr(default, "value", default)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_every_setting_is_documented_with_its_default() -> None:
    documented = settings_table()
    actual = {f"GATEWAY_{name.upper()}": shown(field.default)
              for name, field in Settings.model_fields.items()}
    assert documented == actual


def test_every_command_is_documented() -> None:
    table = section("Command line")
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert isinstance(sub.choices, dict)
    commands: list[str] = []
    for name, parser in sub.choices.items():
        nested = [a for a in parser._actions if a.dest.endswith("_command")]
        if nested and isinstance(nested[0].choices, dict):
            commands += [f"gateway {name} {n}" for n in nested[0].choices]
        else:
            commands.append(f"gateway {name}")
    assert len(commands) >= 9
    for command in commands:
        assert f"| `{command}" in table, f"{command} is missing from the README"


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert [b.strip() for b in blocks] == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/gateway serve",
        "scripts/test",
    ]
    assert "\nscripts/test\n" in (REPO / ".ci" / "run").read_text()
