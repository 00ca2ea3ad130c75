"""The index of waiting runs, and the log of emitted events it is checked against.

A paused run that sleeps or waits for an event gets a tiny object (`{}`) in the ``waits``
namespace whose *name* says why: ``<run id>.<wake time in ms, hex, or ->.<event hash or ->``
and, when it waits for an event, ``.<since>`` (the id its earliest pending wait began at).
An invocation lists the namespace once and skips those runs without claiming or reading them;
an emitter finds the runs waiting for its event by the hash. The run's record stays the truth:
an entry only ever promises "not due before this time / this event", it is written after the
record and deleted when the record no longer says so.

Every emitted event is also written to the ``events`` log (``<event id>.<event hash>``) before
its emitter lists the index. An invocation lists the log after the index and reads every run
whose entry waits for an event the log holds after the entry's ``since``: so an event whose
emitter did not see the entry (written after its listing, or lost in a crash) reaches the run
at the next invocation, and an entry left behind by a crash (the record no longer waits) is
repaired there, not trusted. See docs/design.md, "Events exactly once".

This module is what the entries and the log say; :mod:`asyncflow._store` writes, lists and
deletes them (when, and in which order, is the invariant above).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._record import RunRecord

__all__ = [
    "EventLog",
    "WaitIndex",
    "event_hash",
    "index_name",
    "pending_waits",
    "sha256_hex",
]

#: How long the event log keeps an event (seconds). Only crash repair reads an event this late:
#: a run whose invoker died between storing its wait and indexing it, or an emitter that died
#: between waking a run and dropping its index entry, is repaired by the first invocation
#: after the crash, which must come within this time.
EVENT_LOG_RETENTION = 7 * 24 * 3600.0


def sha256_hex(text: str) -> str:
    import hashlib  # (loaded on first use: OpenSSL's import costs a cold start milliseconds)

    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(event: str) -> str:
    # Event names are any text; a fixed-size hash keeps the entry's name short and safe.
    return sha256_hex(event)[:16]


def pending_waits(record: RunRecord, event: str) -> list[int]:
    """The positions of the steps of ``record`` waiting for ``event``, in journal order."""
    return [
        i
        for i, step in enumerate(record.steps)
        if step["kind"] == "wait_event"
        and step.get("name") == event
        and "event" not in step
        and not step.get("timed_out")
    ]


def index_name(record: RunRecord) -> str | None:
    """The index entry ``record`` needs, or ``None`` when it is due at the next invocation."""
    if record.status not in ("paused", "pending") or (
        record.wake_at is None and record.wait_event is None
    ):
        return None
    # Rounded up: the index never calls a run due before its record does.
    wake = "-" if record.wake_at is None else f"{math.ceil(record.wake_at * 1000):x}"
    if record.wait_event is None:
        return f"{record.run_id}.{wake}.-"
    waits = pending_waits(record, record.wait_event)
    # The earliest pending wait: any event logged after it may be for this run.
    since = min((str(record.steps[i]["since"]) for i in waits), default="")
    return f"{record.run_id}.{wake}.{event_hash(record.wait_event)}.{since}"


class EventLog:
    """One listing of the event log: the ids of the events emitted lately, by event hash."""

    def __init__(self, names: Iterable[str]) -> None:
        self.by_hash: dict[str, list[str]] = {}
        for name in names:
            event_id, _, digest = name.partition(".")
            if digest:
                self.by_hash.setdefault(digest, []).append(event_id)
        for ids in self.by_hash.values():
            ids.sort()

    def after(self, digest: str, since: str | None) -> list[str]:
        """The log's names for event hash ``digest`` emitted after ``since``, oldest first
        (``None``: since unknown, every one)."""
        return [
            f"{i}.{digest}" for i in self.by_hash.get(digest, ()) if since is None or i > since
        ]

    def expired(self) -> list[str]:
        """Take the events older than the retention (their ids start with their time) out of
        this listing; return their names, for the store to delete."""
        import time  # (the clock event ids are made from, not the flow's, which tests move)

        horizon = f"{int((time.time() - EVENT_LOG_RETENTION) * 1000):011x}"
        names = []
        for digest, ids in self.by_hash.items():
            while ids and ids[0] < horizon:
                names.append(f"{ids.pop(0)}.{digest}")
        return names


@dataclass(frozen=True)
class _Entry:
    name: str
    wake_at: float | None
    event: str | None
    since: str | None  # (None: an entry written before the log existed)

    def due(self, now: float) -> bool:
        return self.wake_at is not None and self.wake_at <= now


class WaitIndex:
    """One listing of the index, by run."""

    def __init__(self, names: Iterable[str]) -> None:
        self.by_run: dict[str, list[_Entry]] = {}
        for name in names:
            run_id, wake, event, since = [*name.split("."), "", "", ""][:4]
            try:
                wake_at = None if wake == "-" else int(wake, 16) / 1000
            except ValueError:
                continue  # not ours
            event_or_none = None if event in ("-", "") else event
            entry = _Entry(name, wake_at, event_or_none, since or None)
            self.by_run.setdefault(run_id, []).append(entry)

    def sleeping(self, run_id: str, now: float, log: EventLog) -> bool:
        """Whether the index says ``run_id`` is not due at ``now`` (every entry agrees), and
        the log holds no event it waits for emitted since its wait began."""
        entries = self.by_run.get(run_id, [])
        return bool(entries) and not any(
            e.due(now) or (e.event is not None and log.after(e.event, e.since)) for e in entries
        )

    def names(self, run_id: str) -> list[str]:
        return [e.name for e in self.by_run.get(run_id, [])]

    def waiting_for(self, event: str, event_id: str) -> list[str]:
        """The runs with an entry for ``event`` whose wait began before ``event_id``, oldest
        first."""
        digest = event_hash(event)
        return sorted(
            r
            for r, entries in self.by_run.items()
            if any(e.event == digest and (e.since is None or e.since < event_id) for e in entries)
        )

    def stale(self, active: Iterable[str]) -> list[str]:
        """Take the entries of runs not in ``active`` (listed after this index) out of this
        listing; return their names, for the store to delete: a crash left them behind their
        run's end, and they would mislead ``next_wakeup``."""
        names = []
        for run_id in self.by_run.keys() - set(active):
            names += self.names(run_id)
            del self.by_run[run_id]
        return names

    def next_wakeup(self) -> float | None:
        times = [
            e.wake_at for entries in self.by_run.values() for e in entries if e.wake_at is not None
        ]
        return min(times, default=None)
