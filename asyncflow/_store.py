"""The store: where a flow's runs, state, index, event log, schedule marks and keys live.

A :class:`Store` wraps a :class:`Backend` (and the flow's clock) and is the one module that
knows the layout; the engine, event delivery, run management and the ``Flow`` ask it for
runs, never for keys. Each namespace is a folder, prefix or partition of the backend:

- ``active``: pending and paused runs. A finished run is saved here first, then moved
  (:meth:`Store.finish_run`): a record with a final status found here is a move a crash
  interrupted, which the next invocation that reads it completes.
- ``finished``: succeeded, failed and cancelled runs.
- ``state``: shared state, one object per name, each written whole.
- ``waits`` and ``events``: the wait index and the event log (what their entries say and the
  invariant they keep with the records: :mod:`asyncflow._waits`).
- ``cron``: per cron workflow, when its schedule was last checked.
- ``keys``: idempotency keys: the run (or the event id) the first caller with a key recorded.
- ``packs`` and ``spilled``: where :class:`asyncflow.PackedBackend` keeps the active runs of a
  store opened with packs (its own layout: asyncflow/_backends/_packs.py); ``packs/meta`` says
  that a store has them, so that a process opening it without packs is refused.

Stored bytes and names are the format: an existing store keeps working, so none of them may
change. The records' own encoding is :mod:`asyncflow._record`'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._backend import Backend, DamagedEntry, Entry, Key
from ._exceptions import BackendError, ConfigError, ConflictError, DamagedRecordError
from ._record import RunRecord, decode_state, dumps, encode_state
from ._shard import Shard
from ._waits import EventLog, WaitIndex, event_hash, index_name, sha256_hex

if TYPE_CHECKING:
    from ._cron import Cron

__all__ = [
    "ACTIVE",
    "CRON",
    "DONE",
    "EVENTS",
    "KEYS",
    "STATE",
    "WAITS",
    "Due",
    "Saved",
    "Store",
]

logger = logging.getLogger("asyncflow")

ACTIVE = "active"  # pending and paused runs
DONE = "finished"  # succeeded, failed and cancelled runs
STATE = "state"
WAITS = "waits"
EVENTS = "events"
CRON = "cron"
KEYS = "keys"
PACKS_META = ("packs", "meta")  # (see PackedBackend)
_STATE_ATTEMPTS = 50


class Saved(Protocol):
    """A run being advanced, as :meth:`Store.save_run` updates it: its record, the version
    stored (``None``: not stored yet) and its entries in the wait index as last seen."""

    record: RunRecord
    version: str | None
    indexed: list[str]


@dataclass
class Due:
    """One listing of the due runs (:meth:`Store.list_due`): the ids oldest first, with the
    versions listed, and the index and event log listed with them."""

    run_ids: list[str]
    versions: list[str]
    index: WaitIndex
    log: EventLog


class Store:
    """A flow's store: the layout of runs, state, index, log, marks and keys over ``backend``.

    ``clock``: the flow's clock (seconds since the epoch), which stamps what is stored.
    Cheap to make: it holds nothing but the two.
    """

    __slots__ = ("backend", "clock")

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock

    def __repr__(self) -> str:
        return f"<Store {self.backend!r}>"

    async def check_layout(self) -> None:
        """Refuse a store that keeps its runs in packs when the backend does not read packs:
        its runs would look absent, and runs started with ids it holds would run twice.

        Raises:
            ConfigError: the store has packs (``packs/meta``) and the backend does not.
        """
        if self.backend.packs_runs:
            return
        found = await self.backend.read(PACKS_META)
        if found is None:
            return
        try:
            count = json.loads(found.data)["count"]
        except (ValueError, KeyError, TypeError):
            count = "<P>"
        url = self.backend.url()
        raise ConfigError(
            f"{self.backend.locate(PACKS_META)} says this store keeps its active runs in"
            f" {count} packs: open it with packs ("
            + (f"'{url}?packs={count}', or " if url else "")
            + f"asyncflow.PackedBackend(backend, packs={count})), or its runs look absent"
        )

    def where(self, run_id: str, *, finished: bool = False) -> str:
        """Where run ``run_id`` is stored (for messages), active or ``finished``."""
        return self.backend.locate((DONE if finished else ACTIVE, run_id))

    # -- writing runs --------------------------------------------------------------------------

    async def create_run(self, record: RunRecord) -> str:
        """Store a new run, create-only; return its version.

        Raises:
            ConflictError: a run with this id is active already (an idempotent start, an event
                delivered again, a retry under way); nothing was written.
        """
        return await self.backend.write((ACTIVE, record.run_id), record.encode(), if_absent=True)

    async def create_runs(self, records: Sequence[RunRecord]) -> list[str | ConflictError]:
        """Store many new runs, create-only, in the backend's batches; per record, in order,
        its version or the ConflictError saying a run with its id is active already (that
        one was not written; the others were)."""
        items = [((ACTIVE, record.run_id), record.encode()) for record in records]
        return await self.backend.create_many(items)

    async def save_run(self, run: Saved, data: bytes, *, last: bool = False) -> None:
        """Write ``data`` (``run.record`` encoded) over the version stored (compare-and-swap;
        create-only when ``run.version`` is ``None``), then bring the wait index in step; the
        new version and index entries are set on ``run``.

        ``last``: the invocation's final write of the run, which also ends its claim.
        """
        write = self.backend.write_and_release if last else self.backend.write
        key = (ACTIVE, run.record.run_id)
        run.version = await write(key, data, if_version=run.version, if_absent=run.version is None)
        if run.indexed or run.record.status == "paused":
            run.indexed = await self.sync_index(run.record, run.indexed)

    @property
    def appends(self) -> bool:
        """Whether a checkpoint may append a run's new steps to its record (:meth:`append_run`)
        instead of writing it whole: the backend appends."""
        return self.backend.appends

    async def append_run(self, run: Saved, lines: bytes) -> None:
        """Append ``lines`` (:meth:`RunRecord.append_lines`) to the run's record at the version
        stored (compare-and-swap), then bring the wait index in step, as :meth:`save_run`
        does; the new version and index entries are set on ``run``."""
        assert run.version is not None  # (a record is written whole before any append)
        key = (ACTIVE, run.record.run_id)
        run.version = await self.backend.append(key, lines, if_version=run.version)
        if run.indexed or run.record.status == "paused":
            run.indexed = await self.sync_index(run.record, run.indexed)

    async def update_run(self, run_id: str, data: bytes, version: str) -> str:
        """Write an active run's record over ``version`` (compare-and-swap; ConflictError if it
        changed); the wait index is the caller's (:meth:`unindex`). Returns the new version."""
        return await self.backend.write((ACTIVE, run_id), data, if_version=version)

    async def finish_run(self, run_id: str, data: bytes, version: str | None) -> None:
        """Move a finished run (``data``, stored active at ``version``) to the finished runs.

        Its final status is already stored in ``active``: a crash here leaves it there, and the
        next invocation that reads it completes the move instead of running it.
        """
        await self.backend.write((DONE, run_id), data)
        await self.backend.delete((ACTIVE, run_id), if_version=version)

    async def delete_finished(self, run_id: str, version: str) -> None:
        """Delete a finished run at the version read (ConflictError if it changed)."""
        await self.backend.delete((DONE, run_id), if_version=version)

    # -- reading runs --------------------------------------------------------------------------

    async def read_run(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The active run ``run_id`` and its version (``None``: not active).

        Raises:
            DamagedRecordError: what is stored there is not a usable record.
        """
        return await self._read_decoded((ACTIVE, run_id))

    async def read_finished(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The finished run ``run_id`` and its version (``None``: not finished)."""
        return await self._read_decoded((DONE, run_id))

    async def _read_decoded(self, key: Key) -> tuple[RunRecord, str] | None:
        entry = await self.backend.read(key)
        if entry is None:
            return None
        return RunRecord.decode(entry.data, self.backend.locate(key), key[1]), entry.version

    async def is_active(self, run_id: str) -> bool:
        return await self.backend.read((ACTIVE, run_id)) is not None

    async def is_finished(self, run_id: str) -> bool:
        return await self.backend.read((DONE, run_id)) is not None

    async def exists(self, run_id: str) -> bool:
        """Whether run ``run_id`` is stored, active or finished (one request where it can)."""
        found = await self.backend.read_many([(ACTIVE, run_id), (DONE, run_id)])
        return any(e is not None for e in found)

    async def find_run(self, run_id: str) -> tuple[bytes, str] | None:
        """The stored record of run ``run_id`` (active or finished) and where it is.

        Raises:
            DamagedRecordError: the object cannot be read.
        """
        # Finished again last: a run that finishes meanwhile is written to finished, then
        # removed from active, and could otherwise be missed in both.
        for namespace in (DONE, ACTIVE, DONE):
            key = (namespace, run_id)
            entry = await self.backend.read(key)
            if entry is not None:
                return entry.data, self.backend.locate(key)
        return None

    async def all_runs(self) -> dict[str, tuple[bytes, str] | DamagedRecordError]:
        """Every stored run: its record and where it is, or why it cannot be read."""
        runs: dict[str, tuple[bytes, str] | DamagedRecordError] = {}
        # Finished last: a run caught between the two namespaces counts as finished.
        for namespace in (ACTIVE, DONE):
            keys = [(namespace, name) for name in await self.backend.list(namespace)]
            entries: list[Entry | DamagedRecordError | None]
            try:
                entries = list(await self.backend.read_many(keys))
            except DamagedRecordError:  # rare: read them one by one to find which
                entries = [await self._read_or_damaged(key) for key in keys]
            for key, entry in zip(keys, entries, strict=True):
                if isinstance(entry, DamagedRecordError):
                    runs[key[1]] = entry
                elif entry is not None:
                    runs[key[1]] = (entry.data, self.backend.locate(key))
        return runs

    async def _read_or_damaged(self, key: Key) -> Entry | DamagedRecordError | None:
        try:
            return await self.backend.read(key)
        except DamagedRecordError as exc:
            return exc

    async def run_versions(self) -> dict[str, tuple[str, str]]:
        """Every stored run: its id -> where it is (a namespace, for :meth:`read_listed`) and
        the version listed."""
        listed: dict[str, tuple[str, str]] = {}
        # Finished last: a run caught between the two namespaces counts as finished.
        for namespace in (ACTIVE, DONE):
            for name, version in (await self.backend.list(namespace)).items():
                listed[name] = (namespace, version)
        return listed

    async def read_listed(
        self, runs: Sequence[tuple[str, str]]
    ) -> list[tuple[bytes, str, str] | None]:
        """The records of ``runs`` (where, run id: as :meth:`run_versions` lists them), each
        with its version and location; ``None``: it moved or went since it was listed."""
        entries = await self.backend.read_many(runs)
        return [
            None if entry is None else (entry.data, entry.version, self.backend.locate(key))
            for key, entry in zip(runs, entries, strict=True)
        ]

    async def finished_entries(self) -> list[tuple[str, Entry, str]]:
        """Every finished run: its id, its stored entry and where it is."""
        keys = [(DONE, name) for name in await self.backend.list(DONE)]
        return [
            (key[1], entry, self.backend.locate(key))
            for key, entry in zip(keys, await self.backend.read_many(keys), strict=True)
            if entry is not None
        ]

    # -- due runs and claims -------------------------------------------------------------------

    async def next_wakeup(self, shard: Shard | None = None) -> float | None:
        """When the earliest durable timer of a run (of ``shard``'s runs) is due, in epoch
        seconds; ``None`` if none sleeps."""
        index = await self.wait_index()
        if shard is not None:
            index.by_run = shard.keep(index.by_run)
        return index.next_wakeup()

    async def list_due(self, shard: Shard | None = None) -> Due:
        """List the runs due now, oldest first, with the index and event log they were judged
        by; delete the index entries of runs that are gone and the events past retention.

        The one place an invocation learns which runs to take. ``shard``: only the runs of
        that shard (and their index entries: another shard's entries are never taken for
        stale); the expired events are deleted by shard 0 alone.

        Raises:
            BaseExceptionGroup: a listing failed (the caller takes the error out).
        """
        # Runs the wait index calls not due (asleep, waiting for an event) are skipped unread.
        # Listed before the runs: a run that an emitter wakes after this listing is left to
        # the emitter's invocation, which executes it (listed the other way round, the run
        # would be claimed here, then skipped as changed since the listing: executed by
        # neither).
        index = WaitIndex(await self.backend.list(WAITS))
        # The event log, listed after the index: an event whose emitter listed the index
        # before a run's entry was written is logged before that entry, so it is in this
        # listing whenever the entry is in the index's (docs/design.md, "Events exactly
        # once"). (Listed side by side with the runs, whose listing has no order to keep with
        # it.)
        log = EventLog(())
        listed: dict[str, str] = {}

        async def list_events() -> None:
            nonlocal log
            log = EventLog(await self.backend.list(EVENTS))

        async with anyio.create_task_group() as tg:
            tg.start_soon(list_events)
            listed = await self.backend.list(ACTIVE)
        if shard is not None:  # this invocation's share of the runs, and of their entries
            listed, index.by_run = shard.keep(listed), shard.keep(index.by_run)
        # Entries of runs not listed: a crash left them behind their run's end, and they would
        # mislead next_wakeup.
        await self.unindex(index.stale(listed))
        now = self.clock()
        if shard is None or shard.first:
            for name in log.expired():
                await self.backend.delete((EVENTS, name))
        run_ids = [
            run_id
            for run_id in sorted(listed)  # ids sort by creation time
            if not index.sleeping(run_id, now, log)
        ]
        # The groups the backend stores together (one, unless it packs runs) one after the
        # other, so that the runs of a pack are advanced side by side and share its writes:
        # the group of the oldest run first, and so on, and oldest first within each (a run
        # left undone by a time limit goes early in the next invocation, whatever its pack).
        rank: dict[int, int] = {}
        for run_id in run_ids:
            rank.setdefault(self.backend.affinity((ACTIVE, run_id)), len(rank))
        if len(rank) > 1:
            run_ids.sort(key=lambda run_id: rank[self.backend.affinity((ACTIVE, run_id))])
        return Due(run_ids, [listed[r] for r in run_ids], index, log)

    async def claim_due(
        self, claims: AsyncExitStack, due: Due
    ) -> tuple[list[str], list[tuple[RunRecord, str]], dict[str, DamagedRecordError]]:
        """Claim and read the ``due`` runs under ``claims`` (held until it closes).

        Returns the runs claimed (not held elsewhere, not changed since listed, readable),
        their records with versions, and the records that cannot be used (reported, skipped).
        Backends with leases take the lease and read in one request per run.
        """
        keys = [(ACTIVE, run_id) for run_id in due.run_ids]
        # Changed since the listing (entry None): another invocation advanced it meanwhile, so
        # its new state was not due when this one began.
        entries, damaged = await self._claim_read(claims, keys, due.versions)
        held: list[str] = []
        runs: list[tuple[RunRecord, str]] = []
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None:
                held.append(key[1])
                record = self._decode(key, entry.data, damaged)
                if record is not None:
                    runs.append((record, entry.version))
        return held, runs, damaged

    async def claim_run(self, claims: AsyncExitStack, run_id: str) -> bool:
        """Claim run ``run_id`` under ``claims``; ``False``: another invocation holds it."""
        return await claims.enter_async_context(self.backend.claim((ACTIVE, run_id)))

    @property
    def claims_are_locks(self) -> bool:
        """Whether a claim outlives a write of the run by another writer (a lock apart from
        the data, the default); else claims are leases in the record, which a write ends."""
        return not self.backend.leased_claims

    async def read_runs(
        self, run_ids: Sequence[str], damaged: dict[str, DamagedRecordError]
    ) -> list[tuple[RunRecord, str]]:
        """The active records of ``run_ids`` with their versions, those not found left out and
        those that cannot be used reported into ``damaged``."""
        keys = [(ACTIVE, run_id) for run_id in run_ids]
        try:
            entries = await self.backend.read_many(keys)
        except DamagedRecordError:
            entries = []
            for key in keys:
                try:
                    entries.append(await self.backend.read(key))
                except DamagedRecordError as exc:
                    _report(damaged, key[1], exc)
                    entries.append(None)
        runs = []
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None:
                record = self._decode(key, entry.data, damaged)
                if record is not None:
                    runs.append((record, entry.version))
        return runs

    async def _claim_read(
        self, claims: AsyncExitStack, keys: list[Key], versions: list[str]
    ) -> tuple[list[Entry | None], dict[str, DamagedRecordError]]:
        """``backend.claim_read`` under ``claims``, with the keys whose stored object cannot be
        read set apart (their entry ``None``), so that one of them does not stop the others."""
        damaged: dict[str, DamagedRecordError] = {}
        backend = self.backend
        try:
            entries = await claims.enter_async_context(backend.claim_read(keys, versions))
        except DamagedRecordError:
            # Rare: claim and read key by key to find which (the batch let go of its claims).
            entries = []
            for key, version in zip(keys, versions, strict=True):
                try:
                    one = await claims.enter_async_context(backend.claim_read([key], [version]))
                except DamagedRecordError as exc:
                    _report(damaged, key[1], exc)
                    one = [None]
                entries += one
        for i, entry in enumerate(entries):
            if isinstance(entry, DamagedEntry):
                _report(damaged, keys[i][1], entry.error)
                entries[i] = None
        return entries, damaged

    def _decode(
        self, key: Key, data: bytes, damaged: dict[str, DamagedRecordError]
    ) -> RunRecord | None:
        try:
            return RunRecord.decode(data, self.backend.locate(key), key[1])
        except DamagedRecordError as exc:
            _report(damaged, key[1], exc)
            return None

    # -- the wait index and the event log ------------------------------------------------------

    async def wait_index(self) -> WaitIndex:
        return WaitIndex(await self.backend.list(WAITS))

    async def sync_index(self, record: RunRecord, known: list[str]) -> list[str]:
        """Make the index say what ``record`` (just written) says; ``known`` are the run's
        entries as last seen. Returns its entries now."""
        wanted = index_name(record)
        if wanted is not None and wanted not in known:
            await self.backend.write((WAITS, wanted), b"{}")  # (not empty: some stores refuse)
        for name in known:
            if name != wanted:
                await self.backend.delete((WAITS, name))
        return [] if wanted is None else [wanted]

    async def unindex(self, names: Iterable[str]) -> None:
        """Delete these entries of the wait index."""
        for name in names:
            await self.backend.delete((WAITS, name))

    async def log_event(self, event_id: str, name: str, args: Any) -> None:
        """Write event ``name`` (``args`` JSON round-tripped already) to the event log."""
        logged = dumps({"asyncflow": "event", "name": name, "args": args}, "")
        await self.backend.write((EVENTS, f"{event_id}.{event_hash(name)}"), logged.encode())

    async def read_event(self, name: str) -> tuple[str, Any] | None:
        """The event name and args of log entry ``name``; ``None`` if it is gone or not ours."""
        entry = await self.backend.read((EVENTS, name))
        if entry is None:
            return None
        try:
            logged = json.loads(entry.data)
            if logged.get("asyncflow") != "event" or not isinstance(logged.get("name"), str):
                return None
        except (ValueError, AttributeError):
            return None  # not an event asyncflow wrote: skipped, left as it is
        return logged["name"], logged.get("args")

    # -- shared state --------------------------------------------------------------------------

    async def read_state(self, name: str, default: Any) -> Any:
        """The value of state ``name``, or ``default`` if it was never set."""
        key = (STATE, name)
        entry = await self.backend.read(key)
        if entry is None:
            return default
        return decode_state(entry.data, name, self.backend.locate(key))

    async def write_state(self, name: str, value_json: str) -> None:
        """Set state ``name``. Each key is its own object, written whole: writers of other keys
        are never lost. What is stored is read first and written over only if it is
        asyncflow's record of that state: a damaged one raises DamagedRecordError and is left
        untouched."""
        key = (STATE, name)
        data = encode_state(name, value_json)
        for _ in range(_STATE_ATTEMPTS):
            entry = await self.backend.read(key)
            if entry is not None:
                decode_state(entry.data, name, self.backend.locate(key))
            try:
                await self.backend.write(
                    key,
                    data,
                    if_version=None if entry is None else entry.version,
                    if_absent=entry is None,
                )
                return
            except ConflictError:
                continue  # another writer in between: read what it wrote, then write over it
        raise BackendError(f"state {name!r} kept changing; it could not be set", location=None)

    async def state_names(self) -> list[str]:
        """The names of every state set, sorted."""
        return sorted(await self.backend.list(STATE))

    # -- schedules -----------------------------------------------------------------------------

    async def cron_tick(self, workflow: str, cron: Cron, now: float) -> float | None:
        """The latest tick of ``cron`` since workflow ``workflow``'s schedule was last checked,
        if any; only the invocation that moves the stored mark forward gets it
        (compare-and-swap), so concurrent invocations start one run per tick."""
        key = (CRON, workflow)
        entry = await self.backend.read(key)
        mark = json.dumps({"asyncflow": "cron", "checked": now}).encode()
        try:
            if entry is None:
                # The first invocation notes the time.
                await self.backend.write(key, mark, if_absent=True)
                return None
            try:
                last = float(json.loads(entry.data)["checked"])
            except (ValueError, KeyError, TypeError):
                raise BackendError(
                    f"{self.backend.locate(key)} is not asyncflow's schedule mark of workflow"
                    f" {workflow!r}; asyncflow leaves it untouched: delete it to restart"
                    " the schedule",
                    location=self.backend.locate(key),
                ) from None
            tick = cron.latest(last, now)
            if tick is not None:
                await self.backend.write(key, mark, if_version=entry.version)
            return tick
        except ConflictError:
            return None

    # -- idempotency keys ----------------------------------------------------------------------

    async def take_run_key(self, workflow: str, key: str, run_id: str) -> str | None:
        """Record run ``run_id`` for idempotency key ``key`` of ``workflow`` (create-only);
        ``None`` if it was recorded now, else the run id the first caller recorded."""
        content = {"asyncflow": "key", "workflow": workflow, "key": key, "run_id": run_id}
        return await self._take_key(_run_key(workflow, key), content, "run_id")

    async def take_event_key(self, event: str, key: str, event_id: str) -> str | None:
        """Record ``event_id`` for idempotency key ``key`` of event ``event`` (create-only);
        ``None`` if it was recorded now, else the event id the first caller recorded."""
        # "\0event\0" keeps these apart from the runs' keys, which start with a workflow's.
        name = sha256_hex(f"\0event\0{event}\0{key}")[:40]
        content = {"asyncflow": "key", "event": event, "key": key, "event_id": event_id}
        return await self._take_key(name, content, "event_id")

    async def _take_key(self, name: str, content: dict[str, str], field: str) -> str | None:
        """Store ``content`` as key ``name`` if no one did (``None``); else the ``field`` that
        the first writer recorded there (a BackendError if the stored key is not ours)."""
        try:
            await self.backend.write((KEYS, name), dumps(content, "").encode(), if_absent=True)
            return None
        except ConflictError:
            pass
        entry = await self.backend.read((KEYS, name))
        try:
            found = json.loads(entry.data if entry is not None else b"")[field]
            if not isinstance(found, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            location = self.backend.locate((KEYS, name))
            raise BackendError(
                f"{location} is not asyncflow's record of key {content['key']!r}; asyncflow"
                " leaves it untouched",
                location=location,
            ) from None
        return found

    async def keyed_run(self, workflow: str, key: str) -> str | None:
        """The id of the run of ``workflow`` that idempotency key ``key`` started, if any."""
        entry = await self.backend.read((KEYS, _run_key(workflow, key)))
        if entry is None:
            return None
        try:
            run_id = json.loads(entry.data)["run_id"]
        except (ValueError, KeyError, TypeError):
            return None  # not ours: take_run_key reports it
        return run_id if isinstance(run_id, str) else None

    async def drop_keys(self, run_ids: Iterable[str]) -> None:
        """Delete the idempotency keys that name one of ``run_ids`` (a key can then start a
        new run)."""
        gone = set(run_ids)
        names = list(await self.backend.list(KEYS))
        found = await self.backend.read_many([(KEYS, n) for n in names])
        for name, key_entry in zip(names, found, strict=True):
            try:
                run_id = json.loads(key_entry.data)["run_id"] if key_entry else None
            except (ValueError, KeyError, TypeError):
                continue
            if run_id in gone:
                await self.backend.delete((KEYS, name))


def _run_key(workflow: str, key: str) -> str:
    return sha256_hex(f"{workflow}\0{key}")[:40]


def _report(
    damaged: dict[str, DamagedRecordError], run_id: str, error: DamagedRecordError
) -> None:
    damaged[run_id] = error
    logger.error("run %s skipped: %s", run_id, error, extra={"summarised": True})
