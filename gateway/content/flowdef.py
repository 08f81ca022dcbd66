"""The flow format: one YAML file per dialogue flow, a closed set of step types.

A flow names message keys, never prose; answers are saved under result names; targets
are step names or ``flow:<id>`` (the start of another flow). No expressions, no templates.

    flow: report
    version: 1
    start: category
    steps:
      category:
        type: menu
        prompt: report-category
        save_as: category
        options:
          - {label: report-category-help, value: help, next: force}
      force: ...
      done: {type: end, prompt: ack-received, action: save_report}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FLOW_TARGET_PREFIX = "flow:"


class Action(StrEnum):
    """What a step asks the gateway to do. The engine emits it; the service carries it out."""

    set_language = "set_language"  # a menu whose option values are language codes
    save_report = "save_report"
    save_poll = "save_poll"
    subscribe = "subscribe"
    unsubscribe = "unsubscribe"
    erase = "erase"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Option(Strict):
    label: str = Field(description="message key of the option's text")
    sms_label: str | None = Field(
        None,
        description="message key shown instead of `label` over SMS, where the inbox keeps "
        "the menu: neutral words (no force, category or abuse) for an entry whose USSD "
        "label names one",
    )
    value: str | None = Field(None, description="saved under the step's save_as")
    next: str | None = Field(None, description="target; defaults to the step's next")


class MenuStep(Strict):
    type: Literal["menu"]
    prompt: str
    options: tuple[Option, ...] = ()
    options_from: Literal["cercles", "communes"] | None = Field(
        None, description="options from the communes list; `communes` needs `within`"
    )
    within: str | None = Field(None, description="result name holding the chosen cercle")
    save_as: str | None = None
    next: str | None = None
    action: Action | None = None

    @model_validator(mode="after")
    def _has_options(self) -> MenuStep:
        if not self.options and not self.options_from:
            raise ValueError("a menu needs options or options_from")
        if self.options and self.options_from:
            raise ValueError("a menu has options or options_from, not both")
        if self.options_from == "communes" and not self.within:
            raise ValueError("options_from: communes needs within: <cercle result name>")
        if self.options_from and not self.next:
            raise ValueError("a menu with options_from needs next")
        return self


class Checks(Strict):
    """Named checks on typed input, each with its translated error message."""

    min_len: int | None = Field(None, ge=1)
    max_len: int | None = Field(None, ge=1, le=160)
    digits: bool = False
    not_digits_only: bool = False


class InputStep(Strict):
    type: Literal["input"]
    prompt: str
    checks: Checks = Checks()
    save_as: str
    next: str
    sensitive: bool = Field(
        False, description="free text: encrypted at rest, never logged or shown again"
    )
    action: Action | None = None


class BranchStep(Strict):
    type: Literal["branch"]
    result: str = Field(description="result name to branch on")
    cases: dict[str, str] = Field(description="saved value -> target")
    default: str


class EndStep(Strict):
    type: Literal["end"]
    prompt: str
    action: Action | None = None


Step = Annotated[MenuStep | InputStep | BranchStep | EndStep, Field(discriminator="type")]


class Flow(Strict):
    flow: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    title: str | None = Field(None, description="message key naming the flow")
    start: str
    steps: dict[str, Step]
    poll: str | None = Field(None, description="poll id for save_poll; one answer per person")
    keywords: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="SMS keywords per language"
    )
    sms_confirm: str | None = Field(
        None,
        description="message key asking an SMS user to confirm before the flow starts "
        "(the USSD-leaves-no-trace warning for reports)",
    )
    expires_after_minutes: int = Field(
        60, ge=1, description="an SMS conversation untouched this long is dropped silently"
    )


def is_flow_target(target: str) -> bool:
    return target.startswith(FLOW_TARGET_PREFIX)


def flow_of_target(target: str) -> str:
    return target.removeprefix(FLOW_TARGET_PREFIX)


def step_targets(step: MenuStep | InputStep | BranchStep | EndStep) -> list[str]:
    """Every target a step can lead to."""
    if isinstance(step, MenuStep):
        targets = [opt.next or step.next for opt in step.options]
        if step.options_from and step.next:
            targets.append(step.next)
        return [t for t in targets if t]
    if isinstance(step, InputStep):
        return [step.next]
    if isinstance(step, BranchStep):
        return [*step.cases.values(), step.default]
    return []


def step_keys(step: MenuStep | InputStep | BranchStep | EndStep) -> list[str]:
    """Every message key a step shows."""
    if isinstance(step, MenuStep):
        labels = [opt.label for opt in step.options]
        labels += [opt.sms_label for opt in step.options if opt.sms_label]
        return [step.prompt, *labels]
    if isinstance(step, InputStep | EndStep):
        return [step.prompt]
    return []
