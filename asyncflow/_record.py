"""A run's stored record and its JSON form."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from typing import Any

from ._exceptions import DamagedRecordError, SerializationError

__all__ = [
    "FINISHED",
    "MAX_DEPTH",
    "MAX_TRACEBACK",
    "RunRecord",
    "bounded_traceback",
    "decode_state",
    "dumps",
    "encode_state",
    "name_json",
    "new_run_id",
    "step_text",
    "storable_name",
    "storable_text",
]

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_STATUSES = frozenset({"pending", "paused"}) | FINISHED
_FORMAT = 1  # bump when the record layout changes incompatibly

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

#: How deeply a stored value (args, a side effect's value, a state value...) may nest lists and
#: objects. Deeper values are refused where they enter: every view of a run (``show --json``,
#: ``GET /runs``) must be able to print it, and Python's JSON printers recurse once per level.
MAX_DEPTH = 100
#: The longest traceback stored with a failure, in characters (its last part is kept).
MAX_TRACEBACK = 8000
# A lone surrogate is a str Python holds but UTF-8 cannot encode (json.loads makes one of
# "\ud800"): stored, it would make the whole record unwritable.
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any, what: str) -> str:
    """Encode ``value`` as JSON, or raise SerializationError naming ``what`` produced it.

    NaN and infinities are refused: other JSON readers (and other backends) reject them. So
    are lone surrogates (not UTF-8) and values nested deeper than :data:`MAX_DEPTH`.
    """
    try:
        text = _encoder.encode(value)
    except RecursionError:
        raise SerializationError(_too_deep(what)) from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} cannot be stored as JSON: {exc}") from None
    if _SURROGATE.search(text):
        raise SerializationError(
            f"{what} cannot be stored: it holds a lone surrogate (such as '\\ud800'), which is"
            " not text UTF-8 can encode"
        )
    # Each level of nesting opens a bracket: few brackets, no need to measure the depth.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise SerializationError(_too_deep(what))
    return text


def _too_deep(what: str) -> str:
    return f"{what} cannot be stored: it nests lists and objects more than {MAX_DEPTH} levels deep"


def _depth(value: Any) -> int:
    """How many levels of lists and objects ``value`` nests (stops counting past MAX_DEPTH)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack += [(c, level + 1) for c in children if isinstance(c, dict | list | tuple)]
    return deepest


def storable_text(text: str) -> str:
    """``text`` (an error message, a traceback) made writable: lone surrogates escaped."""
    if _SURROGATE.search(text):
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def storable_name(name: str, what: str) -> None:
    """Refuse a name (of state, an event, a key) that cannot be stored: a lone surrogate."""
    if _SURROGATE.search(name):
        raise SerializationError(
            f"the {what} name {name.encode('utf-8', 'backslashreplace').decode()!r} holds a lone"
            " surrogate, which is not text UTF-8 can encode"
        )


def bounded_traceback(exc: BaseException) -> str:
    """``exc``'s traceback (with its causes) as text, at most MAX_TRACEBACK characters."""
    import traceback

    text = storable_text("".join(traceback.format_exception(exc)))
    if len(text) > MAX_TRACEBACK:
        text = "... (the start is cut)\n" + text[-MAX_TRACEBACK:]
    return text


@functools.lru_cache(maxsize=1024)
def name_json(name: str) -> str:
    # Side effect and state names repeat on every step: encode each once.
    return _encoder.encode(name)


def step_text(kind: str, name: str | None = None, **fields: str) -> str:
    """The JSON text of a journal step; ``fields`` are given as JSON text already."""
    parts = [f'"kind":"{kind}"']
    if name is not None:
        parts.append(f'"name":{name_json(name)}')
    parts += [f'"{key}":{text}' for key, text in fields.items()]
    return "{" + ",".join(parts) + "}"


_last_id = [0, 0]  # milliseconds and sequence of the last id this process made


def new_run_id() -> str:
    """A run id that sorts by creation time: milliseconds, a sequence number, random bits.

    Within a process ids strictly increase, even within one millisecond; ids made by different
    processes in the same millisecond are told apart by the random bits.
    """
    ms = time.time_ns() // 1_000_000
    last_ms, seq = _last_id
    if ms <= last_ms:
        ms, seq = last_ms, seq + 1
        if seq > 0xFFF:
            ms, seq = ms + 1, 0
    else:
        seq = 0
    _last_id[:] = [ms, seq]
    return f"{ms:011x}{seq:03x}{os.urandom(3).hex()}"


class RunRecord:
    """One run: what started it, its status and its journal of steps.

    Each step is kept twice: as a dict (to replay) and as JSON text (to write). The text is
    made once, when the step is recorded or loaded, so a checkpoint joins strings instead of
    encoding the whole journal again, and a workflow that mutates a value it was handed cannot
    change what is stored. Loaded steps are encoded in one call, as one text (``loaded_json``);
    steps recorded since have a text each (``step_json``), since the last of them may still
    change (a side effect that finishes).
    """

    __slots__ = (
        "args",
        "created_at",
        "error",
        "loaded",
        "loaded_json",
        "result",
        "run_id",
        "status",
        "step_json",
        "steps",
        "traceback",
        "trigger",
        "updated_at",
        "wait_event",
        "wake_at",
        "workflow",
    )

    def __init__(
        self,
        *,
        run_id: str,
        workflow: str,
        trigger: str,
        args: Any,
        created_at: float,
        status: str = "pending",
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.trigger = trigger
        self.args = args
        self.status = status
        self.created_at = created_at
        self.updated_at = created_at
        self.result: Any = None
        self.error: str | None = None
        self.traceback: str | None = None  # of a failure, when the run failed on an exception
        # Why a paused run waits: the earliest time it may resume (epoch seconds; ``None``:
        # at the next invocation) and the event it waits for. The engine keeps an index of
        # both, so that invocations skip a waiting run without reading its record.
        self.wake_at: float | None = None
        self.wait_event: str | None = None
        self.steps: list[dict[str, Any]] = []
        self.loaded = 0  # how many of the steps loaded_json holds
        self.loaded_json = ""
        self.step_json: list[str] = []  # the text of steps[loaded:]

    # -- journal -----------------------------------------------------------------------------

    def append(self, step: dict[str, Any], text: str) -> int:
        """Append a step with its JSON text; return its index."""
        self.steps.append(step)
        self.step_json.append(text)
        return len(self.steps) - 1

    def replace(self, index: int, step: dict[str, Any], text: str) -> None:
        if index < self.loaded:
            # A loaded step changes (a side effect that paused inside finishes): split the
            # loaded text into one text per step. Decoded afresh from the text, not taken from
            # the dicts, which the workflow may have mutated through the values it was given.
            fresh = json.loads(f"[{self.loaded_json}]")
            self.step_json = [_encoder.encode(s) for s in fresh] + self.step_json
            self.loaded, self.loaded_json = 0, ""
        self.steps[index] = step
        self.step_json[index - self.loaded] = text

    @property
    def logs(self) -> list[str]:
        return [s["message"] for s in self.steps if s["kind"] == "log"]

    # -- encoding ------------------------------------------------------------------------------

    def encode(self) -> bytes:
        head = {
            "asyncflow": "run",
            "format": _FORMAT,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "trigger": self.trigger,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "args": self.args,
            "result": self.result,
            "error": self.error,
            **({"traceback": self.traceback} if self.traceback is not None else {}),
            "wake_at": self.wake_at,
            "wait_event": self.wait_event,
        }
        # args and result were checked when they were set; the steps are already text.
        text = _encoder.encode(head)
        steps = ",".join([self.loaded_json, *self.step_json] if self.loaded else self.step_json)
        return f'{text[:-1]},"steps":[{steps}]}}'.encode()

    @classmethod
    def decode(cls, data: bytes, location: str, name: str | None = None) -> RunRecord:
        """Parse a stored record; anything else raises DamagedRecordError naming ``location``.

        ``name``: the name it is stored under, which must be its run id (a record copied to
        another name would otherwise run twice).
        """
        raw = _load(data, location)
        if not isinstance(raw, dict) or raw.get("asyncflow") != "run":
            raise _foreign(location, "it is not an asyncflow run record")
        if raw.get("format") != _FORMAT:
            raise _foreign(location, f"its format {raw.get('format')!r} is not {_FORMAT}")
        try:
            record = cls(
                run_id=_typed(raw, "run_id", str),
                workflow=_typed(raw, "workflow", str),
                trigger=_typed(raw, "trigger", str),
                args=raw.get("args"),
                created_at=float(_typed(raw, "created_at", (int, float))),
                status=_typed(raw, "status", str),
            )
            if record.status not in _STATUSES:
                raise ValueError(f"unknown status {record.status!r}")
            record.updated_at = float(_typed(raw, "updated_at", (int, float)))
            record.result = raw.get("result")
            record.error = _optional(raw, "error")
            record.traceback = _optional(raw, "traceback")
            wake_at = raw.get("wake_at")
            if wake_at is not None and (
                isinstance(wake_at, bool)
                or not isinstance(wake_at, int | float)
                or not math.isfinite(wake_at)
            ):
                raise TypeError("field 'wake_at' has the wrong type")
            record.wake_at = None if wake_at is None else float(wake_at)
            record.wait_event = _optional(raw, "wait_event")
            steps = _typed(raw, "steps", list)
            if not all(isinstance(s, dict) and isinstance(s.get("kind"), str) for s in steps):
                raise ValueError("a step is not an object with a kind")
            record.steps = steps
            if steps:
                record.loaded = len(steps)
                record.loaded_json = _encoder.encode(steps)[1:-1]
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise _foreign(location, f"it is damaged: {exc}") from None
        if name is not None and record.run_id != name:
            raise _foreign(
                location,
                f"it holds run {record.run_id!r}, not {name!r}: a copy of another run's record",
            )
        return record


def _load(data: bytes, location: str) -> Any:
    try:
        # Strict UTF-8 first: json.loads would let encoded lone surrogates through.
        text = data.decode()
        raw = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _foreign(location, f"it is not valid JSON ({exc})") from None
    except RecursionError:
        raise _foreign(location, "it nests too deeply to be read") from None
    # An escaped lone surrogate loads, then could never be written again: check (only the
    # rare texts that escape a surrogate at all).
    if _ESCAPED_SURROGATE.search(text) and _SURROGATE.search(_encoder.encode(raw)):
        raise _foreign(location, "it holds a lone surrogate, which is not text UTF-8 can encode")
    return raw


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number asyncflow writes")


def encode_state(name: str, value_json: str) -> bytes:
    """A shared-state object: its name (to recognise it when read back) and value."""
    return f'{{"asyncflow":"state","name":{_encoder.encode(name)},"value":{value_json}}}'.encode()


def decode_state(data: bytes, name: str, location: str) -> Any:
    raw = _load(data, location)
    if not isinstance(raw, dict) or raw.get("asyncflow") != "state" or raw.get("name") != name:
        raise _foreign(location, f"it is not asyncflow's record of state {name!r}")
    return raw.get("value")


def _typed(raw: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    value = raw[field]
    if not isinstance(value, kind):
        raise TypeError(f"field {field!r} has the wrong type")
    return value


def _optional(raw: dict[str, Any], field: str) -> Any:
    return None if raw.get(field) is None else _typed(raw, field, str)


def _foreign(location: str, why: str) -> DamagedRecordError:
    return DamagedRecordError(
        f"{location} cannot be used: {why}. asyncflow leaves it untouched; "
        "restore it from a backup or move it away.",
        location=location,
    )
