"""The step schema: each kind of journal step with its fields, how a step is built (as a dict
to replay and as the JSON text that is stored), the branch-path grammar, and how a step is
described (in errors, in the public :class:`asyncflow.Step` view, by the CLI).

Every place that makes or reads a step of a run's journal goes through this module, so that
a new primitive is one entry in :data:`KINDS` and one builder here, one method on the context,
and its documentation (docs/adding-a-primitive.md).

The stored text of every step is built here next to its dict, once, when the step is
recorded: a checkpoint then joins texts instead of encoding the journal again
(:class:`asyncflow._record.RunRecord`). The bytes must not change: stored runs outlive the
code that wrote them (``tests/test_golden_records.py`` holds them to the byte).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from ._record import dumps, name_json, step_text

__all__ = [
    "KINDS",
    "Kind",
    "Step",
    "StepView",
    "address",
    "attempt_label",
    "branch_label",
    "call",
    "child_path",
    "compact",
    "describe",
    "label_position",
    "local_time",
    "received",
    "stamp",
    "unfinished",
    "view",
    "with_branch",
]

#: A step as it is kept: the dict a replay reads, the JSON text a checkpoint writes.
Step = tuple[dict[str, Any], str]


# -- the kinds -----------------------------------------------------------------------------------


class Kind:
    """One kind of step.

    Attributes:
        kind: its ``"kind"`` field, as stored.
        primitive: the call that records it, as errors name it (``{name!r}`` is filled in).
        fields: its fields besides ``kind``, ``name`` and the ones every step may have
            (``at``: when it was recorded; ``end``: when it ended; ``branch``: its context's
            path).
        value: the field :attr:`asyncflow.Step.value` shows.
        lasting: it can end after it was recorded (its ``end`` is recorded then); the others
            end when they are recorded.
        done: whether a lasting step has ended, from its fields.
        deadline: it has a deadline: when it ends (``until``) or is next tried
            (``retry_at``).
    """

    # (A plain class: a dataclass would cost every cold start a millisecond to define.)
    __slots__ = ("deadline", "done", "fields", "kind", "lasting", "primitive", "value")

    def __init__(
        self,
        kind: str,
        primitive: str,
        fields: tuple[str, ...] = (),
        *,
        value: str = "value",
        lasting: bool = False,
        done: Callable[[dict[str, Any]], bool] | None = None,
        deadline: bool = False,
    ) -> None:
        self.kind = kind
        self.primitive = primitive
        self.fields = fields
        self.value = value
        self.lasting = lasting
        self.done = done
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"Kind({self.kind!r})"


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("log", "log()", ("message",), value="message"),
        Kind("get_state", "get_state({name!r})", ("value",)),
        Kind("set_state", "set_state({name!r})", ("value", "change", "sent")),
        Kind("event", "event({name!r})", ("change", "sent")),
        Kind(
            "wait_event",
            "wait_event({name!r})",
            ("since", "until", "value", "event", "timed_out"),
            lasting=True,
            done=lambda s: "event" in s or bool(s.get("timed_out")),
            deadline=True,
        ),
        Kind(
            "sleep",
            "sleep()",
            ("until", "done"),
            value="until",
            lasting=True,
            done=lambda s: bool(s.get("done")),
            deadline=True,
        ),
        Kind("now", "now()", ("value",)),
        Kind("random", "random()", ("value",)),
        Kind("uuid", "uuid()", ("value",)),
        Kind("pause", "pause_once()"),
        Kind("gather", "gather()", ("n",), value="n", lasting=True, done=lambda s: True),
        Kind(
            "sideeffect",
            "side effect {name!r}",
            ("span", "value", "error", "attempts", "last_error", "retry_at"),
            lasting=True,
            done=lambda s: "value" in s or "error" in s,
            deadline=True,
        ),
    )
}


def call(kind: str, name: str | None) -> str:
    """The primitive that records a step of ``kind`` (``name``), as errors name it."""
    known = KINDS.get(kind)
    if known is None:
        return f"{kind}()"
    return known.primitive.format(name=name)


# -- the branch-path grammar ----------------------------------------------------------------------
#
# A step's ``branch`` field is the path of the context that recorded it ("" for the workflow:
# no field). A path is labels joined by "/"; a label says where in its parent context the child
# was made, by the parent's step position (counting from 0):
#   "3.1"    branch 1 of the gather at step 3;
#   "5#2"    the second attempt of the retried side effect at step 5;
#   "3.1/0.2" branch 2 of the gather at step 0 of branch "3.1".
# The same on every replay, whatever order concurrent branches ran in.


def branch_label(pos: int, i: int) -> str:
    """The label of branch ``i`` of the gather at step ``pos``."""
    return f"{pos}.{i}"


def attempt_label(pos: int, attempt: int) -> str:
    """The label of attempt ``attempt`` (from 1) of the retried side effect at step ``pos``."""
    return f"{pos}#{attempt}"


def label_position(label: str) -> int:
    """The position, in its parent context, of the step that made a child context: ``3`` for
    ``"3.1"`` (branch 1 of the gather at 3) and for ``"3#2"`` (attempt 2 of the side effect at
    3)."""
    return int(label.replace("#", ".").split(".")[0])


def child_path(path: str, label: str) -> str:
    """The path of the child labelled ``label`` of the context at ``path``."""
    return f"{path}/{label}" if path else label


def address(path: str, position: int) -> str:
    """A step's address: its context's path and its position there (``3``, ``3.1/0``)."""
    return f"{path}/{position}" if path else str(position)


def with_branch(text: str, path: str) -> str:
    """The JSON text of a step with the ``branch`` field of its context's path."""
    return f'{text[:-1]},"branch":{name_json(path)}}}'


def stamp(step: dict[str, Any], text: str, field: str, value: float) -> str:
    """Set the time ``field`` (``at``, ``end``) of a step; return its text with the field."""
    step[field] = value
    return f'{text[:-1]},"{field}":{dumps(value, "the clock time")}}}'


# -- building steps -------------------------------------------------------------------------------


def log(message: str) -> Step:
    return {"kind": "log", "message": message}, step_text(
        "log", message=dumps(message, "the message logged")
    )


def get_state(name: str, value_json: str) -> Step:
    step = {"kind": "get_state", "name": name, "value": json.loads(value_json)}
    return step, step_text("get_state", name, value=value_json)


def set_state(name: str, value_json: str) -> Step:
    step = {"kind": "set_state", "name": name, "value": json.loads(value_json)}
    return step, step_text("set_state", name, value=value_json)


def state_change(name: str, old: Any, new: Any, change_id: str) -> Step:
    """A ``set_state`` that changed a value workflows are triggered by: ``change`` holds the
    id and args of the runs it starts."""
    step = {"kind": "set_state", "name": name, "value": new}
    step["change"] = {"id": change_id, "args": {"old": old, "new": new}}
    return step, dumps(step, "")


def event(name: str, args: Any, event_id: str) -> Step:
    step = {"kind": "event", "name": name, "change": {"id": event_id, "args": args}}
    return step, dumps(step, "")


def wait_event(name: str, since: str, until: float | None) -> Step:
    step = {"kind": "wait_event", "name": name, "since": since, "until": until}
    return step, dumps(step, "")


def received(step: dict[str, Any], args: Any, event_id: str, now: float) -> Step:
    """The ``wait_event`` step ``step`` answered by event ``event_id`` with ``args`` at ``now``
    (the time its wait ended)."""
    done = {**step, "value": args, "event": event_id, "end": now}
    return done, dumps(done, f"the args of event {step['name']!r}")


def sleep(until: float) -> Step:
    step = {"kind": "sleep", "until": until}
    return step, dumps(step, "")


def now(value: float) -> Step:
    return {"kind": "now", "value": value}, step_text("now", value=repr(value))


def random(value: float) -> Step:
    return {"kind": "random", "value": value}, step_text("random", value=repr(value))


def uuid(value: str) -> Step:
    return {"kind": "uuid", "value": value}, step_text("uuid", value=f'"{value}"')


def pause() -> Step:
    return {"kind": "pause"}, step_text("pause")


def gather(n: int) -> Step:
    return {"kind": "gather", "n": n}, step_text("gather", n=str(n))


def sideeffect_started(name: str) -> Step:
    return {"kind": "sideeffect", "name": name}, step_text("sideeffect", name)


def sideeffect_retrying(name: str, failed: int, error: dict[str, str], retry_at: float) -> Step:
    """A side effect whose ``failed``-th attempt failed with ``error``, to be tried again at
    ``retry_at``."""
    step = {"kind": "sideeffect", "name": name, "attempts": failed}
    step.update(last_error=error, retry_at=retry_at)
    text = step_text(
        "sideeffect",
        name,
        attempts=str(failed),
        last_error=dumps(error, ""),
        retry_at=dumps(retry_at, "the retry time"),
    )
    return step, text


def sideeffect_returned(name: str, span: int, attempts: int | None, value_json: str) -> Step:
    """A side effect that returned (``value_json``) after ``span`` inner steps."""
    step: dict[str, Any] = {"kind": "sideeffect", "name": name, "span": span}
    fields = {"span": str(span)}
    if attempts is not None:
        step["attempts"] = attempts
        fields["attempts"] = str(attempts)
    step["value"] = json.loads(value_json)  # what replays will return
    fields["value"] = value_json
    return step, step_text("sideeffect", name, **fields)


def sideeffect_raised(name: str, span: int, attempts: int | None, error: dict[str, str]) -> Step:
    """A side effect that raised ``error`` after ``span`` inner steps."""
    step: dict[str, Any] = {"kind": "sideeffect", "name": name, "span": span, "error": error}
    fields = {"span": str(span), "error": dumps(error, "")}
    if attempts is not None:
        step["attempts"] = attempts
        fields["attempts"] = str(attempts)
    return step, step_text("sideeffect", name, **fields)


def unfinished(step: dict[str, Any]) -> dict[str, Any]:
    """The side effect ``step`` as it was when it started (to be entered again on retry)."""
    again = {"kind": "sideeffect", "name": step["name"]}
    if "branch" in step:
        again["branch"] = step["branch"]
    return again


def marked(step: dict[str, Any], *, ended: bool, **fields: Any) -> Step:
    """``step`` with ``fields`` set (its outcome: ``sent``, ``done``, ``timed_out``), without
    the fields its context adds again when it is stored (``branch``; ``end`` if it ends now)."""
    dropped = ("branch", "end") if ended else ("branch",)
    new = {k: v for k, v in step.items() if k not in dropped} | fields
    return new, dumps(new, "")


# -- describing steps -----------------------------------------------------------------------------


def view(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of the public :class:`asyncflow.Step` view of a stored step."""
    kind = raw["kind"]
    known = KINDS.get(kind)
    error = raw.get("error", raw.get("last_error"))
    if isinstance(error, dict):
        error = f"{error.get('type')}: {error.get('message')}"
    value = raw.get("value" if known is None else known.value)
    if isinstance(raw.get("change"), dict):  # an event emitted, a state change
        value = raw["change"]["args"] if kind == "event" else raw.get("value")
    done = True if known is None or known.done is None else known.done(raw)
    if kind == "wait_event" and raw.get("timed_out"):
        error = "WaitTimeout"
    started_at = raw.get("at")
    ended_at = raw.get("end")
    if ended_at is None and (known is None or not known.lasting):
        ended_at = started_at  # a step that takes no time
    deadline = None
    if known is not None and known.deadline:
        deadline = raw.get("until", raw.get("retry_at"))
    return {
        "kind": kind,
        "name": raw.get("name"),
        "value": value,
        "error": error,
        "done": done,
        "branch": raw.get("branch"),
        "attempts": raw.get("attempts"),
        "retry_at": raw.get("retry_at"),
        "started_at": started_at,
        "ended_at": ended_at,
        "deadline": deadline,
    }


class StepView(Protocol):
    """What :func:`describe` reads of a step: the fields of :class:`asyncflow.Step`."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def value(self) -> Any: ...
    @property
    def error(self) -> str | None: ...
    @property
    def done(self) -> bool: ...
    @property
    def attempts(self) -> int | None: ...
    @property
    def retry_at(self) -> float | None: ...


def describe(step: StepView) -> str:
    """One line saying what a step did (the CLI's ``show``)."""
    if step.kind == "log":
        return f"log {compact(step.value)}"
    if step.kind == "pause":
        return "pause_once"
    if step.kind == "gather":
        return f"gather of {step.value} branches"
    if step.kind == "sleep":
        return f"sleep until {local_time(step.value)}{'' if step.done else ' (sleeping)'}"
    if step.kind in ("now", "random", "uuid"):
        return f"{step.kind} -> {compact(step.value)}"
    if step.kind == "event":
        return f"event {step.name} {compact(step.value)}"
    if step.kind == "wait_event":
        if step.error is not None:
            return f"wait_event {step.name}: timed out"
        if not step.done:
            return f"wait_event {step.name} (waiting)"
        return f"wait_event {step.name} -> {compact(step.value)}"
    text = f"{step.kind} {step.name}"
    if step.retry_at is not None and not step.done:
        return (
            f"{text} failed {step.attempts} time(s), last with {step.error};"
            f" next attempt at {local_time(step.retry_at)}"
        )
    tried = f" (attempt {step.attempts})" if step.attempts and step.attempts > 1 else ""
    if step.error is not None:
        return f"{text} raised {step.error}{tried}"
    if not step.done:
        return f"{text} (started, not finished)"
    if step.kind == "set_state":
        return f"{text} = {compact(step.value)}"
    return f"{text} -> {compact(step.value)}{tried}"


def compact(value: Any) -> str:
    """A value as one line of JSON (non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False)


def local_time(ts: float) -> str:
    """Seconds since the epoch as a local ISO time, to the second."""
    from datetime import datetime  # (loaded when used: `import asyncflow` does without it)

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
