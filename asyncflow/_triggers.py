"""What starts a workflow: an event, a change of shared state, every invocation, a schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ._exceptions import ConfigError
from ._validate import name as checked_name

if TYPE_CHECKING:
    from ._cron import Cron

__all__ = [
    "Trigger",
    "TriggerKind",
    "as_trigger",
    "cron_trigger",
    "event_trigger",
    "every_trigger",
    "state_trigger",
]

TriggerKind = Literal["event", "state", "every", "cron"]


@dataclass(frozen=True)
class Trigger:
    """What starts a workflow's runs; made by :func:`event_trigger`, :func:`state_trigger`,
    :func:`every_trigger` and :func:`cron_trigger`.

    Attributes:
        kind: ``"event"``, ``"state"``, ``"every"`` or ``"cron"``.
        name: the event's or state's name, or the cron expression (``""`` for every).
    """

    kind: TriggerKind
    name: str
    cron: Cron | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        """The trigger as runs record it: ``name``, ``state:name``, ``every``, ``cron:expr``."""
        if self.kind == "event":
            return self.name
        if self.kind == "every":
            return "every"
        return f"{self.kind}:{self.name}"


def event_trigger(name: str) -> Trigger:
    """Start a run whenever event ``name`` is emitted (``flow.emit``, ``c.event``, or
    ``flow.run(name)``); the run's args are the event's. The same as giving ``name`` alone.
    """
    return Trigger("event", _name(name, "event"))


def state_trigger(state_name: str) -> Trigger:
    """Start a run whenever a workflow's ``c.set_state(state_name, ...)`` changes its value.

    The run's args are ``{"old": previous value, "new": new value}`` (``old`` is ``None`` when
    the state was never set). Writing the value it already holds starts nothing.
    """
    return Trigger("state", _name(state_name, "state"))


def every_trigger() -> Trigger:
    """Start one run at every invocation (``run``, ``emit``, ``retry``), with args ``None``."""
    return Trigger("every", "")


def cron_trigger(expression: str) -> Trigger:
    """Start a run on a schedule: a five-field cron expression, in UTC.

    Nothing runs between invocations: each invocation starts one run if at least one tick of
    the schedule passed since the previous invocation that checked it, for the latest such tick
    only (a script called once a day with ``*/10 * * * *`` gets one run, not 144). The first
    invocation only notes the time. The run's args are ``{"tick": "<ISO time of the tick>"}``.

    Raises:
        ConfigError: the expression is not a valid five-field cron expression.
    """
    from ._cron import Cron  # (loaded on first use, with datetime)

    return Trigger("cron", expression, Cron(expression))


def _name(name: object, what: str) -> str:
    return checked_name(name, f"the {what} name", error=ConfigError)


def as_trigger(trigger: str | Trigger, workflow: str) -> Trigger:
    """``@flow.workflow(trigger=...)``'s trigger (a name is an event), checked once here.

    Raises:
        ConfigError: neither a non-empty string nor a :class:`Trigger`.
    """
    if isinstance(trigger, Trigger):
        return trigger
    if isinstance(trigger, str) and trigger:
        return Trigger("event", trigger)
    raise ConfigError(
        f"the trigger of workflow {workflow!r} must be a non-empty string or a Trigger,"
        f" not {trigger!r}"
    )
