"""A run's stored record and its JSON form."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
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
    "stored_json",
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
    # The values of most steps (a clock time, None): written as the encoder writes them,
    # without its calls (a fifth of a step's encoding).
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
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
    change what is stored. Loaded steps keep the text they were stored in, as one text
    (``loaded_json``); steps recorded since have a text each (``step_json``), since the last
    of them may still change (a side effect that finishes).

    Stored, a record is one line of JSON, which appended lines may follow (see
    :meth:`append_lines`): each ``[index, step]``, a step recorded (``index`` is the number of
    steps before it) or replaced (a smaller ``index``). A backend that appends lets a run
    checkpoint a long journal by writing only what changed, and a paused run's last write of
    an invocation appends its new steps too while the lines stay short next to the first line
    (else it writes the record whole again, as one line). A record's ``updated_at`` is the
    later of its first line's and the times (``at``, ``end``) of the steps its lines hold.
    """

    __slots__ = (
        "args",
        "changed",
        "created_at",
        "error",
        "loaded",
        "loaded_json",
        "result",
        "run_id",
        "status",
        "step_json",
        "steps",
        "stored_len",
        "stored_tail",
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
        # The indices of the steps replaced since the engine last stored the record (``None``:
        # none; the engine resets it): what an appended line must replace.
        self.changed: set[int] | None = None
        # The record as read (decode): the length of its first line, and of the appended lines
        # after it (``None``: lines may not be appended to it as read: a crash cut its last
        # line short, or it was not read, or encoded for a write since).
        self.stored_len = 0
        self.stored_tail: int | None = None

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
        if self.changed is None:
            self.changed = {index}
        else:
            self.changed.add(index)

    @property
    def logs(self) -> list[str]:
        return [s["message"] for s in self.steps if s["kind"] == "log"]

    # -- encoding ------------------------------------------------------------------------------

    def _head(self, updated_at: float | None) -> dict[str, Any]:
        return {
            "asyncflow": "run",
            "format": _FORMAT,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "trigger": self.trigger,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": updated_at,
            "args": self.args,
            "result": self.result,
            "error": self.error,
            **({"traceback": self.traceback} if self.traceback is not None else {}),
            "wake_at": self.wake_at,
            "wait_event": self.wait_event,
        }

    def encode(self) -> bytes:
        # args and result were checked when they were set; the steps are already text.
        self.stored_tail = None  # about to be written whole: what is stored is not known here
        text = _encoder.encode(self._head(self.updated_at))
        steps = ",".join([self.loaded_json, *self.step_json] if self.loaded else self.step_json)
        return f'{text[:-1]},"steps":[{steps}]}}'.encode()

    def head_key(self) -> tuple[Any, ...]:
        """The fields appended lines cannot change and a run's execution may: a checkpoint
        that changes one writes the record whole. (Its id, workflow, trigger, args and
        creation time never change; ``updated_at`` is told by the steps' times.)"""
        return (
            self.status,
            self.result,
            self.error,
            self.traceback,
            self.wake_at,
            self.wait_event,
        )

    def append_lines(self, stored: int, replaced: Iterable[int]) -> bytes | None:
        """The lines that bring a stored copy of this record up to date: the steps
        ``replaced`` since (those below ``stored``), then every step from ``stored`` (the
        number of steps the copy holds) on. Each line is ``[index, step]`` and ends in a
        newline. ``None`` when a step's own text is not at hand (loaded, never replaced)."""
        loaded, texts = self.loaded, self.step_json
        indices = [*sorted(i for i in replaced if i < stored), *range(stored, len(self.steps))]
        if indices and min(indices) < loaded:
            return None
        return "".join([f"[{i},{texts[i - loaded]}]\n" for i in indices]).encode()

    @classmethod
    def decode(cls, data: bytes, location: str, name: str | None = None) -> RunRecord:
        """Parse a stored record; anything else raises DamagedRecordError naming ``location``.

        ``name``: the name it is stored under, which must be its run id (a record copied to
        another name would otherwise run twice).
        """
        text = _text(data, location)
        first, lines = _split_lines(text)
        # Lines may be appended after what was read only if it ends with a whole line: a
        # crash that cut the last one short leaves it to be dropped by a whole write.
        clean = "\n" not in text or text.endswith("\n")
        scanned = _scan_record(first)
        if scanned is None:
            raw, steps_text = _load_text(first, location), None
        else:
            raw, steps_text = scanned
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
            if lines:
                latest, added = _apply_lines(steps, lines, location)
                if latest > record.updated_at:
                    record.updated_at = latest
                if steps_text is None or added is None:
                    steps_text = None
                else:  # lines that only added steps: their texts follow the first line's
                    inner = steps_text[1:-1]
                    steps_text = "[" + ",".join([inner, *added] if inner.strip() else added) + "]"
            if not all(isinstance(s, dict) and isinstance(s.get("kind"), str) for s in steps):
                raise ValueError("a step is not an object with a kind")
            record.steps = steps
            if steps:
                record.loaded = len(steps)
                if steps_text is None:
                    steps_text = _encoder.encode(steps)
                record.loaded_json = steps_text[1:-1]
            record.stored_len = len(first)
            record.stored_tail = len(text) - len(first) if clean else None
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise _foreign(location, f"it is damaged: {exc}") from None
        if name is not None and record.run_id != name:
            raise _foreign(
                location,
                f"it holds run {record.run_id!r}, not {name!r}: a copy of another run's record",
            )
        return record


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number asyncflow writes")


def stored_json(data: bytes) -> Any:
    """The JSON value of a stored run record, its appended lines applied (what
    :meth:`RunRecord.decode` reads), for views that read its fields themselves.

    Raises:
        ValueError: it is not a record's JSON (or its appended lines are damaged).
    """
    try:
        first, lines = _split_lines(_text(data, "the record"))
        raw = _load_text(first, "the record")
        if lines:
            steps = raw["steps"] if isinstance(raw, dict) else None
            if not isinstance(steps, list):
                raise ValueError("appended lines follow a record without steps")
            latest, _ = _apply_lines(steps, lines, "the record")
            updated = raw.get("updated_at")
            if isinstance(updated, int | float) and latest > updated:
                raw["updated_at"] = latest
    except DamagedRecordError as exc:
        raise ValueError(str(exc)) from None
    return raw


def _text(data: bytes, location: str) -> str:
    try:
        # Strict UTF-8: json.loads would let encoded lone surrogates through.
        return data.decode()
    except UnicodeDecodeError as exc:
        raise _foreign(location, f"it is not valid JSON ({exc})") from None


def _split_lines(text: str) -> tuple[str, list[str]]:
    """A stored record's first line (the record as last written whole) and its complete
    appended lines. A last line without its newline is an append a crash cut short: that
    checkpoint never returned, so it is left out."""
    if "\n" not in text:
        return text, []
    first, *lines = text.split("\n")
    lines.pop()  # "" after the last newline, or the torn tail of an append
    return first, lines


def _apply_lines(
    steps: list[Any], lines: list[str], location: str
) -> tuple[float, list[str] | None]:
    """Apply appended lines (``[index, step]``) to ``steps``, in order; return the latest time
    (``at``, ``end``) of the steps they hold (the record's ``updated_at`` when later), and
    the exact texts of the steps they add when every line adds one in asyncflow's own form
    (``[<index>,<step>]``, the step's text kept as RunRecord keeps a loaded step's: encoding
    the steps again cost more than parsing them), else ``None``."""
    latest = -math.inf
    added: list[str] | None = []
    for n, line in enumerate(lines, 2):
        # The line as asyncflow writes it is parsed at once (a JSONDecoder per line, as
        # json.loads with options makes, cost a third of the parse); anything else (spaces
        # around it, escapes of "\u" form, which _load_text checks) as json.loads parses it.
        entry: Any = None
        if "\\u" not in line:
            try:
                entry, end = _scan(line, 0)
                if end != len(line):
                    entry = None
            except (StopIteration, ValueError, IndexError, RecursionError):
                entry = None
        if entry is None:
            entry = _load_text(line, location, f"line {n}")
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) is int
            and 0 <= entry[0] <= len(steps)
            and isinstance(entry[1], dict)
        ):
            raise _foreign(location, f"line {n} is not a step asyncflow appended")
        index, step = entry
        if index == len(steps):
            if added is not None:
                prefix = f"[{index},"
                text = line[len(prefix) : -1]
                if (
                    line.startswith(prefix)
                    and "\\u" not in line
                    and ('"branch"' not in text or '"branch":' in text)  # (see _scan_record)
                ):
                    added.append(text)
                else:
                    added = None
            steps.append(step)
        else:
            steps[index] = step
            added = None
        for field in ("at", "end"):
            at = step.get(field)
            if type(at) in (float, int) and at > latest:
                latest = at
    return latest, added


# A record in asyncflow's own form, as RunRecord.encode writes it.
_OWN_FORM = '{"asyncflow":"run",'
# The parser json.loads uses, which also reads one value at an index and says where it ends.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(
    parse_constant=_no_constant
).scan_once  # type: ignore[attr-defined]  # (set by JSONDecoder's __init__)


def _scan_record(text: str) -> tuple[dict[str, Any], str] | None:
    """Parse a record written in asyncflow's own form field by field, to keep the exact text
    of its steps (encoding them again costs more than the parse); ``None`` when it is in any
    other form (then parsed whole, and its steps encoded again)."""
    # (Escapes of "\u" form are rare: control characters, lone surrogates, which the whole
    # parse checks. Leaving them to it also keeps any other spelling of a key out.)
    if not text.startswith(_OWN_FORM) or "\\u" in text:
        return None
    raw: dict[str, Any] = {}
    pos, end, last = 1, 0, len(text) - 1
    try:
        while True:
            if text[pos] != '"':
                return None
            key, pos = _scan(text, pos)
            if text[pos] != ":" or key in raw:
                return None
            raw[key], end = _scan(text, pos + 1)
            if key == "steps":
                break
            if text[end] != ",":
                return None
            pos = end + 1
    except (StopIteration, ValueError, IndexError, RecursionError):
        return None
    steps = text[pos + 1 : end]
    # "steps" must be the last field, and its text exactly the array. The journal tells
    # steps of branches by their text ('"branch":', see Journal): another spelling of that key
    # (a space before the colon) is encoded again, canonically.
    if end != last or text[last] != "}" or not steps.startswith("["):
        return None
    if '"branch"' in steps and '"branch":' not in steps:
        return None
    return raw, steps


def _load(data: bytes, location: str) -> Any:
    return _load_text(_text(data, location), location)


def _load_text(text: str, location: str, what: str = "it") -> Any:
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise _foreign(location, f"{what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise _foreign(location, f"{what} nests too deeply to be read") from None
    # An escaped lone surrogate loads, then could never be written again: check (only the
    # rare texts that escape a surrogate at all).
    if _ESCAPED_SURROGATE.search(text) and _SURROGATE.search(_encoder.encode(raw)):
        raise _foreign(
            location, f"{what} holds a lone surrogate, which is not text UTF-8 can encode"
        )
    return raw


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
