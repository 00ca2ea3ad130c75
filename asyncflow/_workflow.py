"""A registered workflow, as the engine and event delivery see it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._triggers import TriggerKind

if TYPE_CHECKING:
    from ._cron import Cron  # (a leaf module: no circle; loaded with the first cron trigger)

__all__ = ["Workflow"]


@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: str
    fn: Callable[..., Awaitable[Any]]
    takes_args: bool
    kind: TriggerKind = "event"  # a plain name is an event
    cron: Cron | None = None
