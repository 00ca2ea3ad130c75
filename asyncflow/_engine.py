"""One invocation: find the due runs, claim them, replay them concurrently, store them."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._cron import Cron
    from ._shard import Shard
    from ._triggers import TriggerKind

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from . import _telemetry as telemetry
from ._backend import Backend, DamagedEntry, Entry, Key
from ._context import Context, Suspend
from ._exceptions import (
    AsyncflowError,
    BackendError,
    ConflictError,
    DamagedRecordError,
    EventCycleError,
    SideEffectError,
    leaves,
)
from ._record import (
    FINISHED,
    RunRecord,
    bounded_traceback,
    decode_state,
    dumps,
    encode_state,
    new_run_id,
    storable_text,
)
from ._results import RunResult
from ._waits import EVENTS, WAITS, EventLog, WaitIndex, event_hash, pending_waits, sync_index

__all__ = ["Execution", "Invocation", "Workflow", "create_runs", "invoke", "read_state"]

logger = telemetry.logger

ACTIVE = "active"  # pending and paused runs
DONE = "finished"  # succeeded and failed runs
STATE = "state"
#: How many rounds of event deliveries one invocation executes before it calls it a cycle.
MAX_EVENT_ROUNDS = 100


@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: str
    fn: Callable[..., Awaitable[Any]]
    takes_args: bool
    kind: TriggerKind = "event"  # a plain name is an event
    cron: Cron | None = None


class Invocation:
    """What the runs of one invocation share: the backend, the workflows, and the runs that
    events emitted during it made due (executed in further rounds before it returns)."""

    __slots__ = ("backend", "clock", "due", "log", "workflows")

    def __init__(
        self, backend: Backend, clock: Callable[[], float], workflows: dict[str, Workflow]
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.workflows = workflows
        self.due: list[str] = []
        self.log = EventLog(())  # the event log as listed when the invocation began

    def state_triggered(self, name: str) -> bool:
        return any(w.kind == "state" and w.trigger == name for w in self.workflows.values())

    async def deliver(
        self, kind: str, name: str, args: Any, event_id: str, *, again: bool = False
    ) -> None:
        from ._events import deliver

        self.due += await deliver(
            self.backend, self.clock, self.workflows, kind, name, args, event_id, again=again
        )


class Execution:
    """One run being advanced: its record, the version stored, and its checkpoints."""

    __slots__ = (
        "backend",
        "clock",
        "dirty",
        "indexed",
        "invocation",
        "key",
        "lock",
        "record",
        "version",
    )

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float],
        record: RunRecord,
        version: str | None,
        invocation: Invocation | None = None,
        indexed: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.record = record
        self.key: Key = (ACTIVE, record.run_id)
        self.version = version  # None: not stored yet
        self.dirty = False  # steps recorded since the last checkpoint
        self.invocation = invocation or Invocation(backend, clock, {})
        self.indexed = list(indexed)  # the run's entries in the wait index, as last seen
        self.lock: anyio.Lock | None = None  # made when first needed

    async def save(self, *, last: bool = False) -> bytes:
        """Store the record (compare-and-swap on the version read); return what was written.

        ``last``: the invocation's final write of this run, which also ends its claim.
        """
        self.record.updated_at = self.clock()
        data = self.record.encode()
        # Before the write: branches of the run may record steps while it is under way.
        self.dirty = False
        write = self.backend.write_and_release if last else self.backend.write
        self.version = await write(
            self.key, data, if_version=self.version, if_absent=self.version is None
        )
        if self.indexed or self.record.status == "paused":
            self.indexed = await sync_index(self.backend, self.record, self.indexed)
        return data

    async def checkpoint_if_dirty(self) -> None:
        """Store the record if steps were recorded since it was last stored.

        Branches of a run checkpoint concurrently: one write at a time, each carrying the
        version the last one returned. Shielded: a timeout cancelling a side effect mid-write
        must not lose the version of a write that happened.
        """
        if not self.dirty:
            return
        if self.lock is None:
            self.lock = anyio.Lock()
        with anyio.CancelScope(shield=True):
            async with self.lock:
                if self.dirty:
                    await self.save()

    async def read_state(self, name: str, default: Any) -> str:
        """Return the JSON text of state ``name``, or of ``default`` if it is not set."""
        return dumps(await read_state(self.backend, name, default), f"the default for {name!r}")

    async def write_state(self, name: str, value_json: str) -> None:
        await write_state(self.backend, name, value_json)

    async def execute(self, workflow: Workflow) -> RunResult | None:
        """Replay the run to its next stop and store it. ``None`` if it was lost to another
        invocation."""
        record = self.record
        # Whatever it waited for is over; a primitive that suspends it again says what for.
        record.wake_at = None
        record.wait_event = None
        ctx = Context(self)
        try:
            if workflow.takes_args:
                result = await workflow.fn(ctx, record.args)
            else:
                result = await workflow.fn(ctx)
            ctx._finish_check()
            record.result = json.loads(dumps(result, f"the result of workflow {workflow.name!r}"))
            record.status = "succeeded"
        except BaseException as exc:
            fatal = ctx._fatal
            if isinstance(fatal, ConflictError):
                logger.warning(
                    "run %s was changed by another invocation; skipped",
                    record.run_id,
                    extra=telemetry.run_extra(record.run_id, record.workflow),
                )
                return None
            if isinstance(fatal, BackendError):
                raise fatal from None  # storage is failing: stop, leave the run as stored
            if fatal is not None:
                failure: BaseException | None = fatal  # whatever the workflow made of it
            elif ctx._suspended and all(isinstance(e, Exception | Suspend) for e in leaves(exc)):
                # Paused; the workflow may have wrapped the pause in an exception group (a task
                # group in its code) or raised something else after swallowing it.
                record.status = "paused"
                failure = None
            elif isinstance(exc, Exception):
                failure = exc
            else:
                raise  # cancellation, KeyboardInterrupt: not the run's outcome
            if failure is not None:
                record.status = "failed"
                record.error = storable_text(f"{type(failure).__name__}: {failure}")
                record.traceback = _traceback_of(failure)
                logger.error(
                    "run %s of %s failed: %s\n%s",
                    record.run_id,
                    workflow.name,
                    record.error,
                    record.traceback,
                    # The CLI's RUN SUMMARY reports the failure; `show` prints the traceback.
                    extra=telemetry.run_extra(record.run_id, workflow.name) | {"summarised": True},
                )
        else:
            if ctx._suspended:
                record.status = "paused"  # it caught the Suspend and returned: still paused
        if record.status == "paused":
            journal = ctx._journal
            record.wake_at = journal.resume_at()
            if journal.due_now:
                # A branch paused until the next invocation, which replays the run anyway:
                # a branch waiting for an event there suspends again.
                record.wait_event = None
        else:
            record.wake_at = record.wait_event = None
        try:
            data = await self.save(last=True)
        except ConflictError:
            logger.warning(
                "run %s was changed by another invocation; skipped",
                record.run_id,
                extra=telemetry.run_extra(record.run_id, record.workflow),
            )
            return None
        if record.status in FINISHED:
            # A conflict here: the outcome is stored, and another invocation found the finished
            # record in `active` (a lease ends with the final write) and completes the move.
            # The run was advanced here, and is reported here.
            with contextlib.suppress(ConflictError):
                await finish(self.backend, record.run_id, data, self.version)
        return RunResult._of(record)


async def read_state(backend: Backend, name: str, default: Any) -> Any:
    """The value of state ``name``, or ``default`` if it was never set."""
    key = (STATE, name)
    entry = await backend.read(key)
    if entry is None:
        return default
    return decode_state(entry.data, name, backend.locate(key))


async def write_state(backend: Backend, name: str, value_json: str) -> None:
    """Set state ``name``. Each key is its own object, written whole: writers of other keys
    are never lost. What is stored is read first and written over only if it is asyncflow's
    record of that state: a damaged one raises DamagedRecordError and is left untouched."""
    key = (STATE, name)
    data = encode_state(name, value_json)
    for _ in range(50):
        entry = await backend.read(key)
        if entry is not None:
            decode_state(entry.data, name, backend.locate(key))
        try:
            await backend.write(
                key,
                data,
                if_version=None if entry is None else entry.version,
                if_absent=entry is None,
            )
            return
        except ConflictError:
            continue  # another writer in between: read what it wrote, then write over it
    raise BackendError(f"state {name!r} kept changing; it could not be set", location=None)


def _traceback_of(failure: BaseException) -> str:
    text = bounded_traceback(failure)
    if isinstance(failure, SideEffectError) and failure.__cause__ is None and failure.traceback:
        # Replayed: the side effect's exception is gone, its traceback was recorded.
        text += f"\nThe side effect raised, when it ran:\n{failure.traceback}"
    return text


async def finish(backend: Backend, run_id: str, data: bytes, version: str | None) -> None:
    """Move a finished run from the active namespace to the finished one.

    Its final status is already stored in ``active``: a crash here leaves it there, and the
    next invocation that reads it completes the move instead of running it.
    """
    await backend.write((DONE, run_id), data)
    await backend.delete((ACTIVE, run_id), if_version=version)


def create_runs(
    clock: Callable[[], float],
    workflows: Sequence[Workflow],
    trigger: str,
    args: Any,
) -> list[RunRecord]:
    """New (unsaved) pending records, one per workflow bound to ``trigger``."""
    args = json.loads(dumps(args, f"the args for trigger {trigger!r}"))
    now = clock()
    return [
        RunRecord(run_id=new_run_id(), workflow=w.name, trigger=trigger, args=args, created_at=now)
        for w in workflows
    ]


async def invoke(
    backend: Backend,
    clock: Callable[[], float],
    workflows: dict[str, Workflow],
    new: list[RunRecord],
    max_concurrency: int,
    stop_at: float | None = None,
    shard: Shard | None = None,
) -> list[RunResult]:
    """:func:`_invoke`, told to the ``asyncflow`` logger (one line), OpenTelemetry (a span)
    and the caller's observer."""
    started = time.monotonic()
    with telemetry.tally() as counts, telemetry.span("asyncflow.invocation", {}) as span:
        results = await _invoke(backend, clock, workflows, new, max_concurrency, stop_at, shard)
        telemetry.set_attributes(span, {"runs": len(results), "held_elsewhere": counts.held})
    # An invocation that found nothing to do is DEBUG: a server resuming every few seconds
    # would otherwise fill its console with them.
    level = logging.INFO if results or counts.held or counts.undefined_runs else logging.DEBUG
    logger.log(level, counts.describe(time.monotonic() - started))
    if counts.undefined_runs:
        n = sum(counts.undefined_runs.values())
        logger.warning(
            "%d run%s of workflows this flow does not define left as they are: %s",
            n,
            "" if n == 1 else "s",
            ", ".join(f"{w!r} ({k})" for w, k in sorted(counts.undefined_runs.items())),
            extra={"undefined_workflows": dict(counts.undefined_runs), "summarised": True},
        )
    return results


async def _invoke(
    backend: Backend,
    clock: Callable[[], float],
    workflows: dict[str, Workflow],
    new: list[RunRecord],
    max_concurrency: int,
    stop_at: float | None = None,
    shard: Shard | None = None,
) -> list[RunResult]:
    """Advance ``new`` runs and every run due before this call, at most ``max_concurrency``
    at once; report them new first, then resumed oldest first, then the runs that events
    emitted meanwhile started or woke. No run starts once ``clock()`` reaches ``stop_at``:
    those stay due (new ones are stored) for the next invocation. ``shard``: advance only the
    due runs of that shard; schedules are ticked by shard 0 alone (asyncflow/_shard.py)."""
    invocation = Invocation(backend, clock, workflows)
    if shard is None or shard.first:
        new = [*new, *await _scheduled(invocation)]
    # Runs the wait index calls not due (asleep, waiting for an event) are skipped unread.
    # Listed before the runs: a run that an emitter wakes after this listing is left to the
    # emitter's invocation, which executes it (listed the other way round, the run would be
    # claimed here, then skipped as changed since the listing: executed by neither).
    index = WaitIndex(await backend.list(WAITS))
    # The event log, listed after the index: an event whose emitter listed the index before a
    # run's entry was written is logged before that entry, so it is in this listing whenever
    # the entry is in the index's (docs/design.md, "Events exactly once").
    # (Listed side by side with the runs, whose listing has no order to keep with it.)
    listed: dict[str, str] = {}

    async def list_events() -> None:
        invocation.log = EventLog(await backend.list(EVENTS))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(list_events)
            listed = await backend.list(ACTIVE)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    if shard is not None:  # this invocation's share of the runs, and of their index entries
        listed, index.by_run = shard.keep(listed), shard.keep(index.by_run)
    await index.drop_stale(backend, listed)
    now = clock()
    if shard is None or shard.first:
        await invocation.log.prune(backend)
    async with AsyncExitStack() as claims:
        # Claim every due run first, in one sweep, and hold the claims until the invocation
        # ends: a run another invocation holds is skipped, and nothing that is read below can
        # change under us. (Claiming run by run as they execute measured slower: each claim
        # then waits on the event loop's thread for the GIL held by the file threads.)
        names = [
            run_id
            for run_id in sorted(listed)  # ids sort by creation time
            if not index.sleeping(run_id, now, invocation.log)
        ]
        keys = [(ACTIVE, run_id) for run_id in names]
        # Changed since the listing (entry None): another invocation advanced it meanwhile, so
        # its new state was not due when this one began. Backends with leases take the lease
        # and read in one request per run here.
        entries, damaged = await _claim_read(claims, backend, keys, [listed[n] for n in names])
        held = [name for name, entry in zip(names, entries, strict=True) if entry is not None]
        if len(held) < len(names):
            telemetry.observer().held_elsewhere(len(names) - len(held))
        jobs: list[tuple[RunRecord, str | None]] = []
        for record in new:
            key = (ACTIVE, record.run_id)
            if await claims.enter_async_context(backend.claim(key)):
                jobs.append((record, None))
            else:
                # A fresh id held elsewhere can only be a hash collision of the claim (about
                # one in 2**62): keep the run for the next invocation rather than lose it.
                await backend.write(key, record.encode(), if_absent=True)
        # A record that cannot be used is reported and skipped, never written: the other runs
        # go on.
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None:
                claimed = _decode(backend, key, entry.data, damaged)
                if claimed is not None:
                    jobs.append((claimed, entry.version))
        results = await _advance_all(invocation, jobs, index, max_concurrency, stop_at)
        results += [RunResult._damaged(key[1], error) for key, error in damaged.items()]
        held += [record.run_id for record, version in jobs if version is None]
        results += await _event_rounds(invocation, claims, set(held), max_concurrency, stop_at)
    return results


async def _scheduled(invocation: Invocation) -> list[RunRecord]:
    """The runs every-invocation and cron workflows start in this invocation."""
    if not any(w.kind in ("every", "cron") for w in invocation.workflows.values()):
        return []
    from ._events import scheduled_runs  # (loaded when used: every import costs a cold start)

    return await scheduled_runs(
        invocation.backend, invocation.clock, invocation.workflows, new_run_id
    )


async def _advance_all(
    invocation: Invocation,
    jobs: list[tuple[RunRecord, str | None]],
    index: WaitIndex,
    max_concurrency: int,
    stop_at: float | None,
) -> list[RunResult]:
    results: list[RunResult | None] = [None] * len(jobs)
    queue = iter(range(len(jobs)))
    backend, clock = invocation.backend, invocation.clock
    observer = telemetry.observer()
    observer.due(len(jobs))

    async def worker() -> None:
        for i in queue:
            record, version = jobs[i]
            if stop_at is not None and clock() >= stop_at:
                if version is None:  # new: stored as it is, so that it stays due
                    # (A conflict: an idempotent start that another caller stored meanwhile.)
                    with contextlib.suppress(ConflictError):
                        await backend.write(
                            (ACTIVE, record.run_id), record.encode(), if_absent=True
                        )
                continue
            indexed = index.names(record.run_id)
            results[i] = result = await advance(invocation, record, version, indexed)
            if result is not None:
                observer.advanced(result)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(min(max_concurrency, len(jobs))):
                tg.start_soon(worker)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    return [r for r in results if r is not None]


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Storage failing under one task stops the invocation: the error itself (the task group
    wrapped it), not a group a caller would have to take apart; any other group as it is."""
    errors = list(leaves(group))
    if all(isinstance(e, AsyncflowError) for e in errors):
        return errors[0]
    whole: BaseException = group
    return whole


async def _event_rounds(
    invocation: Invocation,
    claims: AsyncExitStack,
    held: set[str],
    max_concurrency: int,
    stop_at: float | None,
) -> list[RunResult]:
    """Advance the runs that events emitted in this invocation started or woke, round after
    round, so that an invocation returns with its events handled."""
    backend = invocation.backend
    results: list[RunResult] = []
    rounds = 0
    while invocation.due:
        rounds += 1
        due, invocation.due = list(dict.fromkeys(invocation.due)), []
        if rounds > MAX_EVENT_ROUNDS:
            raise EventCycleError(
                f"events emitted during this invocation kept starting or waking runs for"
                f" {MAX_EVENT_ROUNDS} rounds (the last ones: {len(due)} runs of"
                f" {_workflows_of(results[-len(due) :])}): do workflows trigger each other in"
                " a cycle? The runs are stored and continue at the next invocation."
            )
        for run_id in due:
            if run_id not in held and await claims.enter_async_context(
                backend.claim((ACTIVE, run_id))
            ):
                held.add(run_id)
        keys = [(ACTIVE, run_id) for run_id in due if run_id in held]
        jobs: list[tuple[RunRecord, str | None]] = []
        damaged: dict[Key, DamagedRecordError] = {}
        for key, entry in zip(keys, await _read_many(backend, keys, damaged), strict=True):
            if entry is not None:
                record = _decode(backend, key, entry.data, damaged)
                if record is not None:
                    jobs.append((record, entry.version))
        results += await _advance_all(invocation, jobs, WaitIndex(()), max_concurrency, stop_at)
        results += [RunResult._damaged(key[1], error) for key, error in damaged.items()]
    return results


async def _claim_read(
    claims: AsyncExitStack, backend: Backend, keys: list[Key], versions: list[str]
) -> tuple[list[Entry | None], dict[Key, DamagedRecordError]]:
    """``backend.claim_read`` under ``claims``, with the keys whose stored object cannot be
    read set apart (their entry ``None``), so that one of them does not stop the others."""
    damaged: dict[Key, DamagedRecordError] = {}
    try:
        entries = await claims.enter_async_context(backend.claim_read(keys, versions))
    except DamagedRecordError:
        # Rare: claim and read key by key to find which (the batch let go of its claims).
        entries = []
        for key, version in zip(keys, versions, strict=True):
            try:
                one = await claims.enter_async_context(backend.claim_read([key], [version]))
            except DamagedRecordError as exc:
                _report(damaged, key, exc)
                one = [None]
            entries += one
    for i, entry in enumerate(entries):
        if isinstance(entry, DamagedEntry):
            _report(damaged, keys[i], entry.error)
            entries[i] = None
    return entries, damaged


async def _read_many(
    backend: Backend, keys: list[Key], damaged: dict[Key, DamagedRecordError]
) -> list[Entry | None]:
    """``backend.read_many``, with the keys that cannot be read set apart (entry ``None``)."""
    try:
        return await backend.read_many(keys)
    except DamagedRecordError:
        entries: list[Entry | None] = []
        for key in keys:
            try:
                entries.append(await backend.read(key))
            except DamagedRecordError as exc:
                _report(damaged, key, exc)
                entries.append(None)
        return entries


def _decode(
    backend: Backend, key: Key, data: bytes, damaged: dict[Key, DamagedRecordError]
) -> RunRecord | None:
    try:
        return RunRecord.decode(data, backend.locate(key), key[1])
    except DamagedRecordError as exc:
        _report(damaged, key, exc)
        return None


def _report(damaged: dict[Key, DamagedRecordError], key: Key, error: DamagedRecordError) -> None:
    damaged[key] = error
    logger.error("run %s skipped: %s", key[1], error, extra={"summarised": True})


def _workflows_of(results: list[RunResult]) -> str:
    return ", ".join(repr(n) for n in sorted({r.workflow for r in results})) or "no workflow"


async def advance(
    invocation: Invocation,
    record: RunRecord,
    version: str | None,
    indexed: Sequence[str] = (),
) -> RunResult | None:
    """Advance one claimed run: a new one (``version`` is ``None``) or a due one as read."""
    backend, clock = invocation.backend, invocation.clock
    if version is not None and record.status == "paused" and record.wait_event is not None:
        # (Before its timeout is looked at: an event logged before the timeout was recorded
        # is received, as an emitter finding the run would have handed it over.)
        woken = await _woken_by_log(invocation, record, version)
        if woken is False:
            return None
        if woken is not True:
            record, version = woken
    if version is not None and record.status not in FINISHED and not _due(record, clock()):
        # Its index entry was lost, or never written (a crash between the record's write and
        # the entry's): write it, leave the run.
        await sync_index(backend, record, list(indexed))
        return None
    execution = Execution(backend, clock, record, version, invocation, indexed)
    if version is None:
        # Stored before it executes, so that a crash from here on cannot lose it.
        try:
            await execution.save()
        except ConflictError:
            return None  # an idempotent start that another caller stored meanwhile
    elif record.status in FINISHED:
        # Complete an interrupted move.
        await finish(backend, record.run_id, record.encode(), version)
        return None
    workflow = invocation.workflows.get(record.workflow)
    if workflow is None:
        # Told once per invocation (the invocation's log line, the RUN SUMMARY), not per run:
        # every script sharing a store would otherwise warn about every other one's runs.
        logger.debug(
            "run %s belongs to workflow %r, which this flow does not define; left as is",
            record.run_id,
            record.workflow,
            extra=telemetry.run_extra(record.run_id, record.workflow),
        )
        telemetry.observer().undefined(record.run_id, record.workflow)
        return None
    with telemetry.span(
        "asyncflow.run", {"run_id": record.run_id, "workflow": record.workflow}
    ) as span:
        result = await execution.execute(workflow)
        telemetry.set_attributes(span, {"status": None if result is None else result.status})
    return result


async def _woken_by_log(
    invocation: Invocation, record: RunRecord, version: str
) -> tuple[RunRecord, str] | bool:
    """A claimed run waiting for an event: hand it the event if the log has one, and store
    that at once (compare-and-swap, as an emitter does), so that an emitter handing it the
    same event meanwhile does one of the two. The record and version to execute; ``True``:
    nothing logged for it, go on with the run as read; ``False``: leave the run."""
    if not await _receive_logged(invocation, record):
        return True
    backend, key = invocation.backend, (ACTIVE, record.run_id)
    record.updated_at = invocation.clock()
    try:
        return record, await backend.write(key, record.encode(), if_version=version)
    except ConflictError:
        pass
    # An emitter woke it first. Where claims are locks apart from the data (the default
    # `write_and_release`), the run is still held here: execute what the emitter stored.
    # Where claims are leases in the object, the emitter's write ended the lease; the
    # emitter's invocation executes the run.
    if type(backend).write_and_release is not Backend.write_and_release:
        return False
    entry = await backend.read(key)
    if entry is None:
        return False
    try:
        stored = RunRecord.decode(entry.data, backend.locate(key), key[1])
    except DamagedRecordError:
        return False  # reported by the invocations that list it
    if stored.status in FINISHED or not _due(stored, invocation.clock()):
        return False
    return stored, entry.version


async def _receive_logged(invocation: Invocation, record: RunRecord) -> bool:
    """Hand the run the earliest logged event it waits for, emitted after its wait began, in
    memory (the caller stores it); whether there was one. This is how an event reaches a run
    whose emitter did not find it in the index."""
    event = record.wait_event
    if event is None or record.status != "paused":
        return False
    waits = pending_waits(record, event)
    if not waits:
        return False
    since = min(str(record.steps[i]["since"]) for i in waits)
    names = invocation.log.after(event_hash(event), since)
    if not names:
        return False
    from ._events import read_logged, receive  # (loaded when used: imports cost a cold start)

    for name in names:
        logged = await read_logged(invocation.backend, name)
        event_id = name.partition(".")[0]
        if (
            logged is not None
            and logged[0] == event
            and receive(record, event, logged[1], event_id, invocation.clock())
        ):
            return True
    return False


def _due(record: RunRecord, now: float) -> bool:
    if record.wake_at is not None:
        return record.wake_at <= now
    return record.wait_event is None
