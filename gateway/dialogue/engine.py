"""The dialogue engine: (flow, state, input) -> (screen, new state, effects). No I/O.

The same engine runs USSD (one screen per hop) and SMS (one question per message); a
``Rules`` object carries what differs between channels and deployments: the screen
budget, the navigation digits and the transliteration policy.

Navigation (brief, "Conventions on the phone"): options use the free digits 1-8 of a page,
``9`` shows the next page, ``0`` goes back (previous page, else previous step), ``00``
returns to the main menu. All three are configurable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.content.catalogs import PLACEHOLDER, Content
from gateway.content.flowdef import (
    Action,
    BranchStep,
    EndStep,
    Flow,
    InputStep,
    MenuStep,
    Option,
    flow_of_target,
    is_flow_target,
)
from gateway.text.encoding import screen_length, transliterate
from gateway.text.screens import Layout, Page, paginate

MAIN_FLOW = "main"
LANGUAGE_FLOW = "language"
OTHER = "other"  # value of the "other / don't know" item of a list menu
MAX_HISTORY = 40
MAX_BRANCH_HOPS = 20
NAMES_LANGUAGE = "fr"  # proper nouns (communes) follow the French transliteration


@dataclass(frozen=True)
class Rules:
    budget: int = 160
    next_key: str = "9"
    back_key: str = "0"
    home_key: str = "00"
    transliterate: bool = True
    params: Mapping[str, str] = field(default_factory=dict)  # global placeholder values
    sms: bool = False  # menus show their options' ``sms_label`` where one is given

    def label(self, option: Option) -> str:
        """The message key an option shows on this channel."""
        return option.sms_label if self.sms and option.sms_label else option.label

    @property
    def option_digits(self) -> tuple[str, ...]:
        taken = {self.next_key, self.back_key, self.home_key}
        return tuple(d for d in "123456789" if d not in taken)


@dataclass(frozen=True)
class Frame:
    flow: str
    step: str
    page: int


@dataclass(frozen=True)
class State:
    """Where a resident is in a dialogue. Serialised (and encrypted) between hops."""

    lang: str
    flow: str
    step: str
    page: int = 0
    history: tuple[Frame, ...] = ()
    results: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ended: bool = False
    suspended: State | None = None  # a dropped dialogue offered for resuming
    # Opened by a radio campaign's code or keyword: the flow a language choice leads to
    # instead of the main menu, and the campaign the dialogue's answers count for.
    entry: str | None = None
    campaign: int | None = None
    gen: int = 0  # the content generation the dialogue began on (0: the latest)
    trial: str | None = None  # a trial session (dialogue.trial): None, "" or "flow:version"

    def but(self, **changes: Any) -> State:
        """A copy with ``changes``: ``dataclasses.replace`` without its per-call field
        introspection (a hop makes a few of these)."""
        unknown = changes.keys() - _STATE_FIELDS
        if unknown:
            raise TypeError(f"State has no field(s) {sorted(unknown)}")
        copy = object.__new__(State)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def flow_results(self) -> Mapping[str, str]:
        return self.results.get(self.flow, {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "lang": self.lang,
            "flow": self.flow,
            "step": self.step,
            "page": self.page,
            "history": [[f.flow, f.step, f.page] for f in self.history],
            "results": {k: dict(v) for k, v in self.results.items()},
            "ended": self.ended,
            "suspended": self.suspended.to_dict() if self.suspended else None,
            **({"entry": self.entry} if self.entry else {}),
            **({"campaign": self.campaign} if self.campaign is not None else {}),
            "gen": self.gen,
            **({"trial": self.trial} if self.trial is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        suspended = data.get("suspended")
        return cls(
            lang=data["lang"],
            flow=data["flow"],
            step=data["step"],
            page=int(data.get("page", 0)),
            history=tuple(Frame(f, s, int(p)) for f, s, p in data.get("history", [])),
            results={k: dict(v) for k, v in data.get("results", {}).items()},
            ended=bool(data.get("ended", False)),
            suspended=cls.from_dict(suspended) if suspended else None,
            entry=data.get("entry") or None,
            campaign=int(data["campaign"]) if data.get("campaign") is not None else None,
            gen=int(data.get("gen", 0)),
            trial=data.get("trial"),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> State:
        return cls.from_dict(json.loads(raw))


_STATE_FIELDS = frozenset(State.__dataclass_fields__)


@dataclass(frozen=True)
class Screen:
    text: str
    end: bool


@dataclass(frozen=True)
class Effect:
    """Something the gateway must do because of the dialogue (save, subscribe, erase...)."""

    action: Action
    flow: str
    version: int
    results: Mapping[str, str]
    sensitive: frozenset[str] = frozenset()
    poll: str | None = None
    campaign: int | None = None  # the radio campaign whose code or keyword opened it


@dataclass(frozen=True)
class Turn:
    screen: Screen
    state: State
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class _Choice:
    label: str  # display text, already in the screen's language
    value: str | None
    next: str | None


class Engine:
    """Runs flows from ``content`` under ``rules``. Holds caches, never I/O."""

    def __init__(self, content: Content, rules: Rules, *, generation: int = 0,
                 trial: str | None = None) -> None:
        self.content = content
        self.rules = rules
        self.generation = generation  # stamped on the dialogues it begins
        self.trial = trial  # ... and this, on a trial's engine
        self._pages: dict[tuple[str, str, str, str | None, bool], list[Page]] = {}
        self._texts: dict[tuple[str, str], str] = {}
        self._choices: dict[tuple[str, str, str, str | None], list[_Choice]] = {}
        self._sensitive: dict[str, frozenset[str]] = {}

    # --- public API ---------------------------------------------------------------

    def begin(self, flow_id: str, lang: str, *, suspended: State | None = None,
              entry: str | None = None, campaign: int | None = None) -> Turn:
        """A new dialogue at the start of ``flow_id``; with ``suspended``, the resume offer.
        ``entry``: the flow the language flow leads to instead of the main menu (and that
        "start again" begins), for a dialogue a radio campaign opened; ``campaign``: the
        campaign its answers count for."""
        if suspended is not None:
            # The offer is on this engine's content ("restart" begins on it); the
            # dialogue it offers keeps its own (``suspended.gen``).
            state = State(lang=lang, flow="", step="", suspended=suspended, entry=entry,
                          campaign=campaign, gen=self.generation, trial=self.trial)
            return Turn(self._resume_screen(state), state)
        state = State(lang=lang, flow=flow_id, step=self.flow(flow_id).start,
                      results={flow_id: {}}, entry=entry, campaign=campaign,
                      gen=self.generation, trial=self.trial)
        return self._settle(state, ())

    def advance(self, state: State, raw: str) -> Turn:
        """Apply one input (a digit, a navigation key or typed text) to ``state``."""
        if state.ended:
            return Turn(self.render(state), state)
        if state.suspended is not None:
            return self._answer_resume(state, raw.strip())
        value = raw.strip()
        rules = self.rules
        if value == rules.home_key:
            return self.begin(MAIN_FLOW, state.lang)
        step = self.step(state)
        if value == rules.back_key:
            return self._back(state)
        if isinstance(step, MenuStep):
            return self._answer_menu(state, step, value)
        if isinstance(step, InputStep):
            return self._answer_input(state, step, raw.strip())
        # A branch or end step never waits for input; settle and show it.
        return self._settle(state, ())

    def render(self, state: State, error: str | None = None) -> Screen:
        """The screen for ``state``, with an optional error line above it."""
        if state.suspended is not None:
            return self._resume_screen(state, error)
        step = self.step(state)
        if isinstance(step, EndStep):
            return Screen(self.say(state.lang, step.prompt), end=True)
        if isinstance(step, InputStep):
            lines = [self.say(state.lang, step.prompt)]
            if state.history:
                lines.append(self._back_line(state.lang))
            text = "\n".join(lines)
        elif isinstance(step, MenuStep):
            page = self.page(state, step)
            text = page.text
            if error and screen_length(f"{error}\n{text}") > self.rules.budget:
                text = page.bare  # the error takes the prompt's place
        else:  # pragma: no cover - branches are settled before rendering
            raise AssertionError("a branch step has no screen")
        if error:
            text = f"{error}\n{text}"
        return Screen(text, end=False)

    def flow(self, flow_id: str) -> Flow:
        return self.content.flows[flow_id]

    def step(self, state: State) -> MenuStep | InputStep | BranchStep | EndStep:
        return self.flow(state.flow).steps[state.step]

    def say(self, lang: str, key: str, **params: str) -> str:
        """A catalog message in its over-the-air form, placeholders filled."""
        cache_key = (lang, key)
        text = self._texts.get(cache_key) if not params else None
        if text is None:
            raw = self.content.text(lang, key)
            values = {**self.rules.params, **params}
            raw = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), raw)
            text = transliterate(raw, lang) if self.rules.transliterate else raw
            if not params:
                self._texts[cache_key] = text
        return text

    def name(self, proper_noun: str) -> str:
        if self.rules.transliterate:
            return transliterate(proper_noun, NAMES_LANGUAGE)
        return proper_noun

    def layout(self, lang: str) -> Layout:
        rules = self.rules
        error = self.say(lang, "error-choice")
        return Layout(
            budget=rules.budget,
            reserve=screen_length(error) + 1,
            digits=rules.option_digits,
            next_line=f"{rules.next_key}. {self.say(lang, 'nav-next')}",
            back_line=self._back_line(lang),
        )

    def choices(self, state: State, step: MenuStep) -> list[_Choice]:
        within = state.flow_results().get(step.within) if step.within else None
        key = (state.flow, state.step, state.lang, within)
        found = self._choices.get(key)
        if found is None:
            found = self._choices[key] = self._make_choices(state, step)
        return found

    def _make_choices(self, state: State, step: MenuStep) -> list[_Choice]:
        lang = state.lang
        if not step.options_from:
            return [_Choice(self.say(lang, self.rules.label(o)), o.value, o.next or step.next)
                    for o in step.options]
        communes = self.content.communes
        if step.options_from == "cercles":
            named = [(c.name, c.id) for c in communes.cercles]
        else:
            cercle_id = state.flow_results().get(step.within or "")
            cercle = communes.cercle(cercle_id) if cercle_id else None
            named = [(c.name, c.id) for c in cercle.communes] if cercle else []
        found = [_Choice(self.name(n), v, step.next) for n, v in named]
        return [*found, _Choice(self.say(lang, "list-other"), OTHER, step.next)]

    def pages(self, state: State, step: MenuStep) -> list[Page]:
        within = state.flow_results().get(step.within) if step.within else None
        can_back = bool(state.history)
        key = (state.flow, state.step, state.lang, within, can_back)
        pages = self._pages.get(key)
        if pages is None:
            labels = [c.label for c in self.choices(state, step)]
            pages = paginate(self.say(state.lang, step.prompt), labels,
                             self.layout(state.lang), can_back=can_back)
            self._pages[key] = pages
        return pages

    def page(self, state: State, step: MenuStep) -> Page:
        pages = self.pages(state, step)
        return pages[min(state.page, len(pages) - 1)]  # content may change between hops

    # --- transitions -------------------------------------------------------------

    def _back_line(self, lang: str) -> str:
        return f"{self.rules.back_key}. {self.say(lang, 'nav-back')}"

    def _error(self, state: State, key: str, **params: str) -> Turn:
        return Turn(self.render(state, self.say(state.lang, key, **params)), state)

    def _back(self, state: State) -> Turn:
        if state.page > 0:
            state = state.but(page=state.page - 1)
        elif state.history:
            frame = state.history[-1]
            state = state.but(flow=frame.flow, step=frame.step, page=frame.page,
                            history=state.history[:-1])
        return Turn(self.render(state), state)

    def _answer_menu(self, state: State, step: MenuStep, value: str) -> Turn:
        page = self.page(state, step)
        if value == self.rules.next_key and page.has_next:
            state = state.but(page=state.page + 1)
            return Turn(self.render(state), state)
        digits = self.rules.option_digits
        if value not in digits or digits.index(value) >= len(page.choices):
            return self._error(state, "error-choice")
        choice = self.choices(state, step)[page.choices[digits.index(value)]]
        results = dict(state.flow_results())
        if step.save_as and choice.value is not None:
            results[step.save_as] = choice.value
        state = state.but(results={**state.results, state.flow: results})
        effects: tuple[Effect, ...] = ()
        if step.action is Action.set_language and choice.value in self.content.catalogs:
            state = state.but(lang=str(choice.value))
            effects = (self._effect(state, Action.set_language),)
        elif step.action is not None:
            effects = (self._effect(state, step.action),)
        assert choice.next is not None  # the validator proves every option leads somewhere
        return self._goto(state, choice.next, effects)

    def _answer_input(self, state: State, step: InputStep, value: str) -> Turn:
        checks = step.checks
        if not value:
            return self._error(state, "error-empty")
        if checks.max_len is not None and len(value) > checks.max_len:
            return self._error(state, "error-too-long", max=str(checks.max_len))
        if checks.min_len is not None and len(value) < checks.min_len:
            return self._error(state, "error-too-short", min=str(checks.min_len))
        if checks.digits and not value.isdigit():
            return self._error(state, "error-digits")
        if checks.not_digits_only and value.isdigit():
            return self._error(state, "error-not-digits")
        results = {**state.flow_results(), step.save_as: value}
        state = state.but(results={**state.results, state.flow: results})
        effects = (self._effect(state, step.action),) if step.action else ()
        return self._goto(state, step.next, effects)

    def _goto(self, state: State, target: str, effects: tuple[Effect, ...]) -> Turn:
        history = (*state.history, Frame(state.flow, state.step, state.page))[-MAX_HISTORY:]
        if is_flow_target(target):
            flow_id = flow_of_target(target)
            if state.entry and state.flow == LANGUAGE_FLOW and flow_id == MAIN_FLOW:
                flow_id = state.entry  # a campaign's poll, once the language is chosen
                state = state.but(entry=None)
            state = state.but(flow=flow_id, step=self.flow(flow_id).start, page=0,
                            history=history, results={**state.results, flow_id: {}})
        else:
            state = state.but(step=target, page=0, history=history)
        return self._settle(state, effects)

    def _settle(self, state: State, effects: tuple[Effect, ...]) -> Turn:
        """Follow branch steps, then show the step reached; an end step ends the dialogue."""
        for _ in range(MAX_BRANCH_HOPS):
            step = self.step(state)
            if not isinstance(step, BranchStep):
                break
            target = step.cases.get(state.flow_results().get(step.result, ""), step.default)
            if is_flow_target(target):
                flow_id = flow_of_target(target)
                state = state.but(flow=flow_id, step=self.flow(flow_id).start,
                                results={**state.results, flow_id: {}})
            else:
                state = state.but(step=target)
        else:  # pragma: no cover - the validator rejects branch-only loops
            raise RuntimeError(f"branch loop in flow {state.flow}")
        step = self.step(state)
        if isinstance(step, EndStep):
            if step.action is not None:
                effects = (*effects, self._effect(state, step.action))
            state = state.but(ended=True, history=())
        return Turn(self.render(state), state, effects)

    def _effect(self, state: State, action: Action) -> Effect:
        flow = self.flow(state.flow)
        sensitive = self._sensitive.get(state.flow)
        if sensitive is None:
            sensitive = self._sensitive[state.flow] = frozenset(
                s.save_as for s in flow.steps.values()
                if isinstance(s, InputStep) and s.sensitive
            )
        return Effect(action, flow.flow, flow.version, dict(state.flow_results()),
                      sensitive, flow.poll, state.campaign)

    # --- resuming a dropped dialogue ---------------------------------------------

    def _resume_screen(self, state: State, error: str | None = None) -> Screen:
        lang = state.lang
        lines = [
            self.say(lang, "resume-offer"),
            f"1. {self.say(lang, 'resume-continue')}",
            f"2. {self.say(lang, 'resume-restart')}",
        ]
        if error:
            lines.insert(0, error)
        return Screen("\n".join(lines), end=False)

    def _answer_resume(self, state: State, value: str) -> Turn:
        suspended = state.suspended
        assert suspended is not None
        if value == "1":
            resumed = suspended.but(lang=state.lang, suspended=None)
            return Turn(self.render(resumed), resumed)
        if value == "2":  # start again: the campaign's poll when a campaign opened it
            return self.begin(state.entry or MAIN_FLOW, state.lang, campaign=state.campaign)
        return Turn(self._resume_screen(state, self.say(state.lang, "error-choice")), state)
