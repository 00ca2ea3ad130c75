"""Every error asyncflow raises.

Our exception hierarchy::

    AsyncflowError
    ├── ConfigError            (a backend URL or setting that cannot be used)
    ├── UsageError             (the API was used in a way it cannot work)
    ├── UnknownTriggerError    (no workflow is bound to a trigger)
    ├── RunNotFoundError       (no run has that id)
    ├── SerializationError     (a value that cannot be stored as JSON)
    ├── SideEffectError        (a side effect raised; seen by the workflow)
    ├── NonDeterminismError    (replay reached a step other than the recorded one)
    ├── WaitTimeout            (c.wait_event() saw no event in time; seen by the workflow)
    ├── EventCycleError        (events kept starting runs that emit events, without end)
    └── BackendError           (storage failed or holds something that is not ours)
        ├── ConflictError      (a conditional write lost to another writer)
        └── DamagedRecordError (a stored record asyncflow cannot use; left untouched)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "AsyncflowError",
    "BackendError",
    "ConfigError",
    "ConflictError",
    "DamagedRecordError",
    "EventCycleError",
    "NonDeterminismError",
    "RunNotFoundError",
    "SerializationError",
    "SideEffectError",
    "UnknownTriggerError",
    "UsageError",
    "WaitTimeout",
]


class AsyncflowError(Exception):
    """Base class of every error asyncflow raises."""


class ConfigError(AsyncflowError):
    """A backend URL or a setting that asyncflow cannot use."""


class UsageError(AsyncflowError):
    """The API was used in a way that cannot work (raised where the mistake is made)."""


class UnknownTriggerError(AsyncflowError):
    """No registered workflow is bound to the trigger that was asked for."""

    def __init__(self, trigger: str, known: list[str]) -> None:
        listed = ", ".join(repr(t) for t in known) or "none"
        super().__init__(f"no workflow is bound to trigger {trigger!r} (known triggers: {listed})")
        self.trigger = trigger


class RunNotFoundError(AsyncflowError):
    """No run with the given id exists in the backend."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class SerializationError(AsyncflowError):
    """A value that must be stored cannot be: it is not JSON (bytes, sets, datetimes...), holds
    NaN or an infinity, a lone surrogate (``"\\ud800"``, which cannot be written as UTF-8), or is
    nested deeper than 100 levels.

    The message names what produced the value (a side effect, a state key, a trigger's args).
    Raised where the value enters, before anything is written. A side effect's value that
    cannot be stored is that side effect's recorded failure: the workflow sees
    :class:`SideEffectError` with ``type_name == "SerializationError"``, on replays too.
    """


class SideEffectError(AsyncflowError):
    """A side effect raised; the workflow sees this in place of the original exception.

    The failure is recorded, so replays raise the same error without running the side effect
    again. On first execution the original exception is the ``__cause__``.

    Attributes:
        name: the side effect's qualified name.
        type_name: the original exception's type name, e.g. ``"ValueError"``.
        message: the original exception's message.
        attempts: how many attempts were made (more than 1 when it was retried).
        traceback: the original exception's traceback as recorded (bounded in size), or
            ``None`` (records written before tracebacks were kept).
    """

    def __init__(
        self,
        name: str,
        type_name: str,
        message: str,
        *,
        attempts: int = 1,
        traceback: str | None = None,
    ) -> None:
        tried = f" (attempt {attempts})" if attempts > 1 else ""
        super().__init__(f"side effect {name!r} raised {type_name}{tried}: {message}")
        self.name = name
        self.type_name = type_name
        self.message = message
        self.attempts = attempts
        self.traceback = traceback


class NonDeterminismError(AsyncflowError):
    """Replay reached a step that differs from the one recorded at the same position.

    This happens when a workflow's code changed under a paused run. The run fails and its
    recorded journal is kept as it was.
    """


class WaitTimeout(AsyncflowError):
    """Raised into a workflow by ``c.wait_event(name, timeout=...)`` once the timeout passed
    with no event ``name``; recorded, so replays raise it at the same point.

    Attributes:
        event: the event's name.
    """

    def __init__(self, event: str, deadline: float) -> None:
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(deadline, timezone.utc).isoformat(timespec="seconds")
        super().__init__(f"no event {event!r} was emitted before {when}")
        self.event = event


class EventCycleError(AsyncflowError):
    """Events emitted during one invocation kept starting or waking runs that emit more, for
    more rounds than an invocation allows: most likely a cycle (A's event starts B, B's
    starts A). The runs are stored; the next invocation continues them.
    """


class BackendError(AsyncflowError):
    """The backend failed, or holds data asyncflow did not write or cannot read.

    Attributes:
        location: the file path or URL of the thing at fault, when there is one.
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class ConflictError(BackendError):
    """A conditional write or delete found another version than the one expected.

    Backends raise it from :meth:`asyncflow.Backend.write` and :meth:`~asyncflow.Backend.delete`;
    the runtime handles it (another invocation got there first), so users rarely see it.
    """


class DamagedRecordError(BackendError):
    """The store holds, where asyncflow keeps a run or a state value, something it cannot use:
    damaged or foreign content, a directory or an unreadable file in place of a file, a copy
    of another run's record.

    asyncflow never overwrites it. An invocation reports such a run (status ``"damaged"``)
    and advances the others; a workflow reading or writing such a state value gets this
    error. Restore the record from a backup or move it away.
    """


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, through any nesting of exception groups (task groups
    wrap what their tasks raised, trio's even for one task)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc
