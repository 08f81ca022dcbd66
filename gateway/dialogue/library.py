"""The content the dialogues run on, by generation, from the database.

Each publication of a flow version makes a new *generation* (``gateway.store.flow_versions``).
A session keeps the generation it began on (``State.gen``) and finishes on it; a new
session gets the latest. A process learns of a publication by reading the generation
counter, a primary-key read, at most once a second (``poll_seconds``), from inside the
transaction of a hop or message it is handling anyway: no extra round trip on most hops,
and no restart. The content of a generation never changes, so it is built once per
process and kept (the most recent ``keep`` of them).

At start, :func:`import_files` stores the content location's flows as versions: the first
start makes them version 1, and a file changed since becomes a new version (published
unless an operator published another version of that flow since the last import). Files
already imported once (a replica still on older files restarting) change nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection

from gateway.content.catalogs import Content, Problem
from gateway.content.flowdef import Flow
from gateway.content.versions import (
    FlowText,
    base_of,
    compose,
    messages_json,
    own_messages,
    parse,
)
from gateway.dialogue.engine import Engine, Rules
from gateway.store import flow_versions as store
from gateway.store.db import Database

log = logging.getLogger("gateway.dialogue.library")

POLL_SECONDS = 1.0
KEEP = 64


class UnknownGeneration(LookupError):
    """A generation this process has not built yet (build it off the event loop)."""

    def __init__(self, generation: int, trial: str | None = None) -> None:
        self.generation = generation
        self.trial = trial
        super().__init__(f"generation {generation} not loaded")


class Library:
    """Content by generation. Thread-safe: hops run on thread pools."""

    def __init__(self, db: Database | None, files: Content, *, poll_seconds: float = POLL_SECONDS,
                 keep: int = KEEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.files = files
        self.base = base_of(files)
        self.poll_seconds = poll_seconds
        self.keep = keep
        self.clock = clock
        self._contents: OrderedDict[int, Content] = OrderedDict()
        self._parsed: dict[tuple[str, int], tuple[Flow, FlowText]] = {}
        # Generations that publish the same versions share one Content (a rollback finds
        # its engines warm), and the validator's verdict on a set of stored versions is
        # kept (publishing it again does not run the validator again).
        self._compositions: OrderedDict[frozenset[tuple[str, int]], Content] = OrderedDict()
        self.verdicts: OrderedDict[frozenset[tuple[str, int]], list[Problem]] = OrderedDict()
        self._latest = 0
        self._checked = -float("inf")
        self._lock = threading.RLock()

    @property
    def latest(self) -> int:
        return self._latest

    def check(self, conn: Connection) -> int:
        """The latest generation, read from the database if the last read is more than
        ``poll_seconds`` old (and its content built if it is new)."""
        now = self.clock()
        if self.db is None or now - self._checked < self.poll_seconds:
            return self._latest
        self._checked = now
        found = store.latest_generation(conn)
        if found > self._latest:
            self.content(found, conn)
            with self._lock:
                self._latest = max(self._latest, found)
        return self._latest

    def invalidate(self) -> None:
        """Read the counter at the next chance (this process just published)."""
        self._checked = -float("inf")

    def refresh(self) -> int:
        """Read the counter now, in a transaction of its own."""
        if self.db is None:
            return self._latest
        self._checked = -float("inf")
        with self.db.transaction() as conn:
            return self.check(conn)

    def cached(self, generation: int) -> Content | None:
        """The content of ``generation`` (0: the latest known) if built."""
        gen = generation or self._latest
        if gen == 0:  # nothing published yet (or no database): the files
            return self.files
        with self._lock:
            found = self._contents.get(gen)
            if found is not None:
                self._contents.move_to_end(gen)
            return found

    def content(self, generation: int, conn: Connection | None = None) -> Content:
        """The content of ``generation`` (0: the latest known), built if need be."""
        found = self.cached(generation)
        if found is not None:
            return found
        gen = generation or self._latest
        if self.db is None:
            return self.files
        if conn is None:
            with self.db.transaction() as own:
                return self._build(gen, own)
        return self._build(gen, conn)

    def _build(self, generation: int, conn: Connection) -> Content:
        published = store.published_at(conn, generation=generation)
        with self._lock:
            missing = [(f, v) for f, v in published.items() if (f, v) not in self._parsed]
        for stored in store.get_versions(conn, wanted=missing):
            text = FlowText(stored.flow, stored.version, stored.definition, stored.messages)
            flow, problems = parse(text)
            if flow is None:  # validated when stored: only a hand-edited row gets here
                log.error("flow %s version %s does not parse: %s", stored.flow,
                          stored.version, problems[0])
                continue
            with self._lock:
                self._parsed[(stored.flow, stored.version)] = (flow, text)
        with self._lock:
            chosen = {f: self._parsed[(f, v)] for f, v in published.items()
                      if (f, v) in self._parsed}
            key = frozenset((f, published[f]) for f in chosen)
            known = self._compositions.get(key)
        if not chosen:
            return self.files
        if known is None:
            content, _ = compose(self.base, chosen)
        else:
            content = known
        with self._lock:
            self._compositions[key] = content
            self._compositions.move_to_end(key)
            while len(self._compositions) > self.keep:
                self._compositions.popitem(last=False)
            self._contents[generation] = content
            while len(self._contents) > self.keep:
                self._contents.popitem(last=False)
        return content

    def candidate(self, text: FlowText, *, generation: int | None = None,
                  conn: Connection | None = None,
                  stored: bool = False) -> tuple[Content | None, list[Problem]]:
        """The content the latest (or ``generation``'s) published flows make with
        ``text`` in place of its flow's published version, and the problems in putting
        them together (the validator's come on top: ``validate.check_content``).
        ``stored``: ``text`` is a stored version (its parse may be kept)."""
        known = self._parsed.get((text.flow, text.version)) if stored else None
        flow, problems = (known[0], []) if known is not None else parse(text)
        if stored and flow is not None and known is None:
            with self._lock:
                self._parsed[(text.flow, text.version)] = (flow, text)
        if flow is None:
            return None, problems
        current = self.content(self._latest if generation is None else generation, conn)
        chosen: dict[str, tuple[Flow, FlowText]] = {}
        for flow_id, other in current.flows.items():
            if flow_id == text.flow:
                continue
            chosen[flow_id] = (other, FlowText(flow_id, other.version, "",
                                               own_messages(current, flow_id)))
        chosen[text.flow] = (flow, text)
        content, more = compose(self.base, chosen)
        return content, problems + more


    def trial_content(self, generation: int, draft: str,
                      conn: Connection | None = None) -> Content:
        """The content of ``generation`` with ``draft`` (``flow:version``, a stored
        version) in place of that flow's published version; ``generation``'s own content
        when the draft is empty or cannot be read."""
        current = self.content(generation, conn)
        if not draft:
            return current
        flow_id, _, number = draft.partition(":")
        key = (flow_id, int(number))
        if key not in self._parsed and self.db is not None:
            if conn is None:
                with self.db.transaction() as own:
                    found = store.get_versions(own, wanted=[key])
            else:
                found = store.get_versions(conn, wanted=[key])
            if not found:
                return current
            stored = found[0]
            text = FlowText(stored.flow, stored.version, stored.definition, stored.messages)
        else:
            known = self._parsed.get(key)
            if known is None:
                return current
            text = known[1]
        content, _ = self.candidate(text, generation=generation or self._latest, conn=conn,
                                    stored=True)
        return content if content is not None else current


class Engines:
    """One engine per generation for one channel's rules (USSD or SMS)."""

    def __init__(self, rules: Rules, library: Library) -> None:
        self.rules = rules
        self.library = library
        self._engines: OrderedDict[int, Engine] = OrderedDict()
        self._by_content: dict[int, Engine] = {}  # id(content) -> its engine
        self._trials: OrderedDict[tuple[int, str], Engine] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def fixed(cls, engine: Engine) -> Engines:
        """Always ``engine`` (content from files, no database)."""
        made = cls(engine.rules, Library(None, engine.content))
        made._engines[0] = engine
        return made

    @property
    def latest(self) -> Engine:
        return self.get(self.library.latest)

    def current(self, conn: Connection) -> Engine:
        """The engine a new session begins on (reads the counter at most once a second)."""
        return self.get(self.library.check(conn), conn)

    def cached(self, generation: int) -> Engine | None:
        gen = generation or self.library.latest
        with self._lock:
            found = self._engines.get(gen)
            if found is not None:
                self._engines.move_to_end(gen)
            return found

    def trial(self, generation: int, draft: str, conn: Connection | None = None) -> Engine:
        """The engine of a trial session (``gateway.dialogue.trial``) begun on
        ``generation`` with ``draft`` (empty: the published content)."""
        key = (generation or self.library.latest, draft)
        with self._lock:
            found = self._trials.get(key)
        if found is not None:
            return found
        content = self.library.trial_content(key[0], draft, conn)
        engine = Engine(content, self.rules, generation=key[0], trial=draft)
        with self._lock:
            engine = self._trials.setdefault(key, engine)
            while len(self._trials) > self.library.keep:
                self._trials.popitem(last=False)
        return engine

    def of(self, generation: int, trial: str | None, conn: Connection | None = None) -> Engine:
        """The engine a session's state names (``State.gen``, ``State.trial``)."""
        return self.get(generation, conn) if trial is None else \
            self.trial(generation, trial, conn)

    def get(self, generation: int, conn: Connection | None = None) -> Engine:
        found = self.cached(generation)
        if found is not None:
            return found
        gen = generation or self.library.latest
        content = self.library.content(gen, conn)
        with self._lock:
            engine = self._by_content.get(id(content))
        if engine is None:  # new content (else: the same versions as another generation)
            engine = Engine(content, self.rules, generation=gen)
        with self._lock:
            engine = self._engines.setdefault(gen, engine)
            self._by_content[id(engine.content)] = engine
            while len(self._engines) > self.library.keep:
                _, gone = self._engines.popitem(last=False)
                if gone not in self._engines.values():
                    self._by_content.pop(id(gone.content), None)
        return engine

    def loaded(self, generation: int, trial: str | None = None) -> Engine:
        """The engine of ``generation`` if built, else :class:`UnknownGeneration` (a
        caller on the event loop builds it on a thread, then asks again)."""
        if trial is not None:
            with self._lock:
                known = self._trials.get((generation or self.library.latest, trial))
            if known is None:
                raise UnknownGeneration(generation, trial)
            return known
        found = self.cached(generation)
        if found is None:
            if self.library.cached(generation or self.library.latest) is None:
                raise UnknownGeneration(generation)
            return self.get(generation)
        return found


def import_files(db: Database, library: Library, *, root: Path, now: datetime) -> list[str]:
    """Store the content location's flows as versions (see the module's docstring); one
    line per change made, for the log. Replicas starting together take turns on the
    generation counter's lock."""
    files = library.files
    done: list[str] = []
    with db.transaction() as conn:
        store.lock_generation(conn)
        current = store.current_publications(conn)
        for flow_id in sorted(files.flows):
            path = root / files.flow_files[flow_id]
            text = FlowText(flow_id, 0, path.read_text(encoding="utf-8"),
                            own_messages(files, flow_id))
            last = store.latest_from_files(conn, flow=flow_id)
            if any(v.digest == text.digest for v in store.versions_of(conn, flow=flow_id)
                   if v.source == "files"):
                # Imported before (a replica still on older files, during a rolling
                # deploy, restarts): nothing new, and nothing published back.
                continue
            number = store.add_version(conn, flow=flow_id, definition=text.definition,
                                       messages=messages_json(text.messages),
                                       digest=text.digest, source="files", created_by=None,
                                       now=now)
            live = current.get(flow_id)
            if live is None or last is None or live.version == last.version:
                store.publish(conn, flow=flow_id, version=number, by=None, now=now)
                done.append(f"{flow_id}: version {number} from {files.flow_files[flow_id]}, "
                            "published")
            else:
                log.warning("flow %s: %s changed; stored as version %s, not published (version "
                            "%s, published from the dashboard, stays live)", flow_id,
                            files.flow_files[flow_id], number, live.version)
                done.append(f"{flow_id}: version {number} from {files.flow_files[flow_id]}, "
                            "not published")
    library.refresh()
    return done
