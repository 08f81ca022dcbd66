"""Nothing in an SMS inbox names a force, a category or an abuse before the resident has
confirmed the no-trace warning (issue 17, item 4).

The walk texts every input a resident could send (each option digit, back, home, yes, no,
stray text, every keyword of every flow in every language, the stop, start, erase and help
words) from every conversation state that can be reached, through the real SMS service on
a real SQLite file, and reads what the outbox would send. Each message received before a
yes to a warning is checked against the report's own labels for what happened and who
did it (from the catalogs, in every language) and a list of force and abuse words. Past a
confirmed warning the dialogue may name them: the walk stops there.

The same walk over content whose poll lost its warning, or whose SMS menu lost its neutral
entry, finds the leak: the check can fail.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from gateway.channels.base import InboundSms
from gateway.content.catalogs import Content
from gateway.content.flowdef import MenuStep
from gateway.dialogue.engine import Engine, State
from gateway.dialogue.sms import conversations
from gateway.outbox import outbox
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.models import utcnow
from gateway.text.encoding import fold
from tests.conftest import REPO
from tests.content.neutral_words import offences

pytestmark = pytest.mark.nodb
MAX_DEPTH = 40


@dataclass(frozen=True)
class Node:
    """Where a resident can be: the open conversation (if any), the contact's language and
    stop, and whether the last message received was a warning."""

    state: str | None  # the conversation's state, opened
    waiting: str | None
    language: str | None
    stopped: bool
    warned: bool
    path: tuple[str, ...]

    def key(self, engine: Engine) -> tuple[Any, ...]:
        """What decides the messages reachable from here: the screen (flow, step, page,
        language, the cercle a commune list is within, whether there is a way back) and
        what the conversation waits for. Not the whole history nor every answer, or the
        walk would never end (the menu's language entry loops back to the menu); going
        back only leads to screens already walked."""
        if self.state is None:
            return (None, self.language, self.stopped, self.warned)
        state = State.loads(self.state)
        within = None
        if state.flow:
            step = engine.step(state)
            if isinstance(step, MenuStep) and step.within:
                within = state.flow_results().get(step.within)
        return (state.flow, state.step, state.page, state.lang, within,
                bool(state.history), self.waiting, self.stopped, self.warned)


def inputs(runtime: Runtime, *, everything: bool) -> list[str]:
    """What a resident may text: navigation, yes and no, stray text, and (``everything``)
    every keyword of every flow in every language and every stop, start, erase and help
    word. Within a conversation, a keyword starts its flow just as it does outside one:
    there, one keyword that interrupts, one that typed text swallows, and each control
    word's first spelling are enough."""
    settings = runtime.settings
    controls = (settings.stop_words, settings.start_words, settings.erase_words,
                settings.help_words, settings.yes_words)
    said = [str(d) for d in range(10)] + ["00", "non", "bonjour"]
    if not everything:
        return [*said, "MENU", "SONDAGE", *(c.split(",")[0] for c in controls)]
    for flow in runtime.engine.content.flows.values():
        for words in flow.keywords.values():
            said += list(words)
    for setting in controls:
        said += [w for w in setting.split(",") if w]
    return list(dict.fromkeys(said))


def warnings(content: Content) -> set[str]:
    """Every warning a flow sends before it starts over SMS, in every language, folded."""
    from gateway.dialogue.engine import Engine, Rules

    engine = Engine(content, Rules(params={"ussd_code": "*123#"}))
    return {fold(engine.say(lang, flow.sms_confirm))
            for flow in content.flows.values() if flow.sms_confirm
            for lang in content.languages}


class Walker:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sms = runtime.sms
        self.numbers = (f"+2237{n:07d}" for n in itertools.count(1))
        self.ids = itertools.count(1)
        self.engine = runtime.sms.engine
        self.content = self.engine.content
        self.warnings = warnings(self.content)
        self.yes = {fold(w) for w in runtime.settings.yes_words.split(",")}
        self.sent = 0

    def step(self, node: Node, said: str) -> tuple[list[str], Node]:
        """Put a new phone at ``node``, text ``said``: the messages sent back, and where
        the phone is then."""
        rt, keys = self.rt, self.rt.keys
        number = next(self.numbers)
        pseudonym = keys.pseudonym(number)
        aad = f"sms:{pseudonym}"
        now = utcnow()
        with rt.db.transaction() as conn:
            queries.touch_contact(conn, pseudonym=pseudonym,
                                  pseudonym_version=keys.pseudonym_version, now=now)
            queries.update_contact(conn, pseudonym=pseudonym, language=node.language,
                                   stopped=node.stopped)
            if node.state is not None:
                conn.execute(conversations.insert().values(
                    pseudonym=pseudonym, state=keys.seal_text(node.state, aad=aad),
                    waiting=node.waiting, expires_at=now + timedelta(hours=1),
                    updated_at=now))
        self.sms.receive(InboundSms(provider="africastalking",
                                    external_id=f"walk-{next(self.ids)}", phone=number,
                                    to="36123", text=said, received_at=now))
        self.sent += 1
        with rt.db.transaction() as conn:
            texts = [r.text for r in conn.execute(
                select(outbox.outbox.c.text).where(outbox.outbox.c.pseudonym == pseudonym)
                .order_by(outbox.outbox.c.id))]
            contact = queries.get_contact(conn, pseudonym=pseudonym)
            row = conn.execute(select(conversations).where(
                conversations.c.pseudonym == pseudonym)).first()
            conn.execute(delete(outbox.outbox).where(outbox.outbox.c.pseudonym == pseudonym))
        state = keys.open_text(row.state, aad=aad) if row is not None else None
        after = Node(
            state=state, waiting=row.waiting if row is not None else None,
            language=contact.language if contact is not None else None,
            stopped=bool(contact.stopped) if contact is not None else False,
            # The warning was the last thing received, or it still waits for its answer
            # (a START or a help request in between leaves the conversation as it was).
            warned=(bool(texts) and fold(texts[-1]) in self.warnings) or (
                node.warned and (state, row.waiting if row is not None else None)
                == (node.state, node.waiting)),
            path=(*node.path, said))
        return texts, after

    def walk(self, *, first_only: bool = False) -> tuple[list[str], int]:
        """Every message received before a confirmed warning that names a force, a
        category or an abuse (with the path that led to it); and the states visited."""
        everything = inputs(self.rt, everything=True)
        some = inputs(self.rt, everything=False)
        roots = [Node(None, None, lang, False, False, ())
                 for lang in (None, *self.content.languages)]
        todo = deque(roots)
        seen = {n.key(self.engine) for n in roots}
        found: list[str] = []
        while todo:
            node = todo.popleft()
            for text in (everything if node.state is None else some):
                messages, after = self.step(node, text)
                confirmed = node.warned and fold(text) in self.yes and \
                    after.waiting not in (None, "confirm")
                if confirmed:
                    continue  # past the warning, the dialogue may name what it asks about
                for message in messages:
                    for word in offences(self.content, message):
                        found.append(f"{' > '.join(after.path)}: '{word}' in {message!r}")
                        if first_only:
                            return found, len(seen)
                if after.key(self.engine) not in seen and len(after.path) < MAX_DEPTH:
                    seen.add(after.key(self.engine))
                    todo.append(after)
        return found, len(seen)


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A copy of the shipped flows and catalogs, to break on purpose."""
    root = tmp_path / "content"
    for part in ("flows", "messages"):
        shutil.copytree(REPO / part, root / part)
    return root


@pytest.fixture
def walker_for(tmp_path: Path, sqlite_template: Path) -> Iterator[Any]:
    runtimes: list[Runtime] = []

    def make(content_dir: Path) -> Walker:
        path = tmp_path / f"walk{len(runtimes)}.db"
        shutil.copyfile(sqlite_template, path)
        settings = Settings(_env_file=None, database_url=f"sqlite:///{path}",
                            key_file=tmp_path / "gateway.keys", content_dir=content_dir,
                            reply_budget_hour=10**9, reply_budget_day=10**9,
                            help_interval_minutes=1)
        runtime = build_runtime(settings)
        runtimes.append(runtime)
        return Walker(runtime)

    yield make
    for runtime in runtimes:
        runtime.db.dispose()


@pytest.mark.slow
def test_no_sms_before_the_confirmed_warning_names_a_force_or_a_category(
        walker_for: Any, record_property: Any) -> None:
    walker = walker_for(REPO)
    started = time.monotonic()
    found, states = walker.walk()
    record_property("figure", f"{states} states, {walker.sent} messages in "
                    f"{time.monotonic() - started:.1f}s, {len(found)} leaks")
    assert states > 50  # the walk went through the menus, the lists and the warnings
    assert found == []


def test_the_walk_finds_a_poll_that_lost_its_warning(walker_for: Any,
                                                     content_dir: Path) -> None:
    poll = content_dir / "flows" / "poll.yml"
    poll.write_text(poll.read_text().replace("sms_confirm: sms-report-warning\n", ""))
    found, _ = walker_for(content_dir).walk(first_only=True)
    assert found and found[0].startswith("SONDAGE: 'armee' in \"Faites-vous confiance à "
                                         "l'armée (FAMa)?"), found


def test_the_walk_finds_a_menu_entry_that_names_the_forces(walker_for: Any,
                                                           content_dir: Path) -> None:
    menu = content_dir / "flows" / "main.yml"
    menu.write_text(menu.read_text().replace("sms_label: main-report-sms, ", ""))
    found, _ = walker_for(content_dir).walk(first_only=True)
    assert found and found[0].startswith("DANNAYA: 'fds' in ") and \
        "\\n1. Signaler un fait (FDS)\\n" in found[0], found
