"""The index of waiting runs: which paused runs are not due, read from one listing.

A paused run that sleeps or waits for an event gets a tiny object (`{}`) in the ``waits``
namespace whose *name* says why: ``<run id>.<wake time in ms, hex, or ->.<event hash or ->``.
An invocation lists the namespace once and skips those runs without claiming or reading them;
an emitter finds the runs waiting for its event by the hash. The run's record stays the truth:
an entry only ever promises "not due before this time / this event", it is written after the
record and deleted when the record no longer says so. A missing entry is harmless (the run is
read and replayed, which writes it again); a stale one can only come from a crash between a
record's write and the entry's deletion.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._backend import Backend
from ._record import RunRecord

__all__ = ["WAITS", "WaitIndex", "event_hash", "index_name", "sha256_hex", "sync_index"]

WAITS = "waits"


def sha256_hex(text: str) -> str:
    import hashlib  # (loaded on first use: OpenSSL's import costs a cold start milliseconds)

    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(event: str) -> str:
    # Event names are any text; a fixed-size hash keeps the entry's name short and safe.
    return sha256_hex(event)[:16]


def index_name(record: RunRecord) -> str | None:
    """The index entry ``record`` needs, or ``None`` when it is due at the next invocation."""
    if record.status not in ("paused", "pending") or (
        record.wake_at is None and record.wait_event is None
    ):
        return None
    # Rounded up: the index never calls a run due before its record does.
    wake = "-" if record.wake_at is None else f"{math.ceil(record.wake_at * 1000):x}"
    event = "-" if record.wait_event is None else event_hash(record.wait_event)
    return f"{record.run_id}.{wake}.{event}"


@dataclass(frozen=True)
class _Entry:
    name: str
    wake_at: float | None
    event: str | None

    def due(self, now: float) -> bool:
        return self.wake_at is not None and self.wake_at <= now


class WaitIndex:
    """One listing of the index, by run."""

    def __init__(self, names: Iterable[str]) -> None:
        self.by_run: dict[str, list[_Entry]] = {}
        for name in names:
            run_id, wake, event = [*name.split("."), "", ""][:3]
            try:
                wake_at = None if wake == "-" else int(wake, 16) / 1000
            except ValueError:
                continue  # not ours
            entry = _Entry(name, wake_at, None if event == "-" else event)
            self.by_run.setdefault(run_id, []).append(entry)

    def sleeping(self, run_id: str, now: float) -> bool:
        """Whether the index says ``run_id`` is not due at ``now`` (every entry agrees)."""
        entries = self.by_run.get(run_id, [])
        return bool(entries) and not any(e.due(now) for e in entries)

    def names(self, run_id: str) -> list[str]:
        return [e.name for e in self.by_run.get(run_id, [])]

    def waiting_for(self, event: str) -> list[str]:
        """The runs with an entry for ``event``, oldest first."""
        digest = event_hash(event)
        return sorted(
            r for r, entries in self.by_run.items() if any(e.event == digest for e in entries)
        )

    async def drop_stale(self, backend: Backend, active: Iterable[str]) -> None:
        """Delete the entries of runs not in ``active`` (listed after this index): a crash
        left them behind their run's end, and they would mislead ``next_wakeup``."""
        for run_id in self.by_run.keys() - set(active):
            for name in self.names(run_id):
                await backend.delete((WAITS, name))
            del self.by_run[run_id]

    def next_wakeup(self) -> float | None:
        times = [
            e.wake_at for entries in self.by_run.values() for e in entries if e.wake_at is not None
        ]
        return min(times, default=None)


async def sync_index(backend: Backend, record: RunRecord, known: list[str]) -> list[str]:
    """Make the index say what ``record`` (just written) says; ``known`` are the run's entries
    as last seen. Returns its entries now."""
    wanted = index_name(record)
    if wanted is not None and wanted not in known:
        await backend.write((WAITS, wanted), b"{}")  # (not empty: some stores refuse that)
    for name in known:
        if name != wanted:
            await backend.delete((WAITS, name))
    return [] if wanted is None else [wanted]
