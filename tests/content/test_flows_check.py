"""``gateway flows check``: the shipped content passes; each defect planted in a copy of it
is named on one line (file, step, key, language) and the command exits 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import REPO

pytestmark = pytest.mark.nodb

Edit = tuple[str, str, str]  # file, text to find, its replacement


def content_copy(tmp_path: Path, edits: list[Edit]) -> Path:
    root = tmp_path / "content"
    shutil.copytree(REPO / "flows", root / "flows")
    shutil.copytree(REPO / "messages", root / "messages")
    for name, old, new in edits:
        path = root / name
        text = path.read_text(encoding="utf-8")
        assert old in text, f"fixture out of date: {old!r} not in {name}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return root


def flows_check(root: Path | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["flows", "check", *([str(root)] if root else [])])
    out = capsys.readouterr().out
    return code, out.replace(str(root), "DIR").splitlines()


def test_the_shipped_flows_and_catalogs_pass(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the default content location: the current directory
    code, lines = flows_check(None, capsys)
    assert (code, lines) == (0, [f"ok: 7 flows in {REPO}"])


def test_a_folder_without_flows_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flows", "check", str(tmp_path)]) == 2
    assert "has no flows/ folder" in capsys.readouterr().err


BROKEN: dict[str, tuple[list[Edit], list[str]]] = {
    "unknown step type": (
        [("flows/info.yml", "  what:\n    type: end", "  what:\n    type: screen")],
        ["flows/info.yml: step 'what': unknown step type 'screen' (menu, input, branch or end)",
         "flows/main.yml: step 'menu': target 'flow:info': no such flow"],
    ),
    "unknown field": (
        [("flows/info.yml", "    prompt: info-about\n",
          "    prompt: info-about\n    color: red\n")],
        ["flows/info.yml: step 'about': color: Extra inputs are not permitted",
         "flows/main.yml: step 'menu': target 'flow:info': no such flow"],
    ),
    "unknown target": (
        [("flows/info.yml", "next: what}", "next: whut}")],
        ["flows/info.yml: step 'about': target 'whut': no such step",
         "flows/info.yml: step 'what': unreachable from the start step"],
    ),
    "unknown flow": (
        [("flows/main.yml", 'next: "flow:info"', 'next: "flow:infos"')],
        ["flows/main.yml: step 'menu': target 'flow:infos': no such flow"],
    ),
    "unreachable step": (
        [("flows/info.yml", "  stop:\n",
          "  orphan:\n    type: end\n    prompt: info-stop-text\n  stop:\n")],
        ["flows/info.yml: step 'orphan': unreachable from the start step"],
    ),
    "dead end": (
        [("flows/info.yml", "{label: info-what, next: what}", "{label: info-what}")],
        ["flows/info.yml: step 'about': option 1 ('info-what') leads nowhere (dead end)",
         "flows/info.yml: step 'what': unreachable from the start step"],
    ),
    "key missing in a language": (
        [("messages/bm/info.yml", "info-privacy: Gundo\n", "")],
        ["flows/info.yml: step 'about': key 'info-privacy' missing in bm"],
    ),
    "placeholders differ": (
        [("messages/fr/info.yml", "info-privacy: Confidentialité",
          "info-privacy: Confidentialité ({minutes} min)")],
        ["messages/bm/info.yml: key 'info-privacy': placeholders none in bm differ from "
         "{minutes} in fr",
         "messages/ff/info.yml: key 'info-privacy': placeholders none in ff differ from "
         "{minutes} in fr"],
    ),
    "a menu item too long for any page": (
        [("messages/bm/info.yml", "info-what: Dannaya ye mun ye?",
          "info-what: " + "Dannaya ye mun ye? " * 9)],
        ["flows/info.yml: step 'about': key 'info-about' in bm: cannot fit a 160-septet "
         "screen even alone on a page (190 septets where 141 fit: '1. "
         + "Dannaya ye mun ye? " * 8 + "Dannaya ye mun ye?')"],
    ),
    "an end screen too long with worst-case placeholders": (
        [("messages/fr/info.yml", "info-stop-text: >-\n",
          "info-stop-text: >-\n  Composez {ussd_code} ou {ussd_code} ou {ussd_code}.\n"),
         ("messages/bm/info.yml", "info-stop-text: >-\n", "info-stop-text: >-\n  {ussd_code}\n"),
         ("messages/ff/info.yml", "info-stop-text: >-\n", "info-stop-text: >-\n  {ussd_code}\n")],
        ["flows/info.yml: step 'stop': key 'info-stop-text' in fr: end screen of 190 septets, "
         "budget 160"],
    ),
    "a letter outside GSM-7 after transliteration": (
        [("messages/bm/info.yml", "info-privacy: Gundo", "info-privacy: Gundo ʃ")],
        ["messages/bm/info.yml: key 'info-privacy': 'ʃ' (U+0283) not GSM-7 after "
         "transliteration in bm"],
    ),
    "a Fulfulde key missing": (
        [("messages/ff/poll.yml", "scale-lot: Sanne  # review: \"beaucoup\"\n", "")],
        ["flows/poll.yml: step 'army': key 'scale-lot' missing in ff",
         "flows/poll.yml: step 'gendarmerie': key 'scale-lot' missing in ff",
         "flows/poll.yml: step 'guard': key 'scale-lot' missing in ff",
         "flows/poll.yml: step 'police': key 'scale-lot' missing in ff"],
    ),
    "a Fulfulde letter its table lacks": (
        [("messages/ff/info.yml", "info-privacy: Suturo", "info-privacy: Suturo ɠ")],
        ["messages/ff/info.yml: key 'info-privacy': 'ɠ' (U+0260) not GSM-7 after "
         "transliteration in ff"],
    ),
    "the language screen too long in one language": (
        [("messages/ff/language.yml", "language-ff: Fulfulde",
          "language-ff: " + "Fulfulde " * 16)],
        ["flows/language.yml: step 'choose': key 'language-choose' in ff: cannot fit a "
         "160-septet screen even alone on a page (155 septets where 138 fit: '1. "
         + "Fulfulde " * 15 + "Fulfulde')"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_copy_names_each_problem_and_exits_1(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edits, expected = BROKEN[case]
    code, lines = flows_check(content_copy(tmp_path, edits), capsys)
    assert code == 1
    assert [line for line in lines if not line.startswith("warning:")] == expected


def test_warnings_are_printed_but_do_not_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = content_copy(tmp_path, [
        ("messages/fr/info.yml", "info-privacy: Confidentialité",
         "info-privacy: Confidentialité\ninfo-spare: rien"),
        ("messages/bm/info.yml", "info-privacy: Gundo", "info-privacy: Gundo\ninfo-spare: foyi"),
        ("messages/ff/info.yml", "info-privacy: Suturo", "info-privacy: Suturo\ninfo-spare: alaa"),
    ])
    code, lines = flows_check(root, capsys)
    assert (code, lines) == (0, [
        "warning: messages/fr/info.yml: key 'info-spare' is not used by any flow",
        "ok: 7 flows in DIR, 1 warning(s)",
    ])


def test_a_smaller_screen_budget_is_checked_too(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_USSD_BUDGET", "60")
    code, lines = flows_check(REPO, capsys)
    assert code == 1
    assert any("budget 60" in line or "60-septet" in line for line in lines)
