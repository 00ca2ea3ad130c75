"""One invocation: find the due runs, claim them, replay them concurrently, store them."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from . import _telemetry as telemetry
from ._context import Context, root_cursor
from ._cursor import Suspend
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
    dumps,
    new_run_id,
    storable_text,
)
from ._results import RunResult, damaged_result, run_result
from ._shard import Shard
from ._store import Store
from ._waits import EventLog, WaitIndex, event_hash, pending_waits
from ._workflow import Workflow

__all__ = ["Execution", "Invocation", "Workflow", "create_runs", "invoke"]

logger = telemetry.logger

#: How many rounds of event deliveries one invocation executes before it calls it a cycle.
MAX_EVENT_ROUNDS = 100
#: How long the lines appended to a record at rest may grow, at least (else as long as its first
#: line), before a run's last write of an invocation writes it whole again (a file block).
_MIN_ROOM = 4096


class Invocation:
    """What the runs of one invocation share: the store, the workflows, and the runs that
    events emitted during it made due (executed in further rounds before it returns)."""

    __slots__ = ("clock", "due", "log", "store", "workflows")

    def __init__(self, store: Store, workflows: dict[str, Workflow]) -> None:
        self.store = store
        self.clock = store.clock
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
            self.store, self.workflows, kind, name, args, event_id, again=again
        )


class Execution:
    """One run being advanced: its record, the version stored, and its checkpoints."""

    __slots__ = (
        "clock",
        "dirty",
        "head",
        "indexed",
        "invocation",
        "lock",
        "record",
        "room",
        "store",
        "stored",
        "tail",
        "version",
    )

    def __init__(
        self,
        store: Store,
        record: RunRecord,
        version: str | None,
        invocation: Invocation | None = None,
        indexed: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.clock = store.clock
        self.record = record
        self.version = version  # None: not stored yet
        self.dirty = False  # steps recorded since the last checkpoint
        self.invocation = invocation or Invocation(store, {})
        self.indexed = list(indexed)  # the run's entries in the wait index, as last seen
        self.lock: anyio.Lock | None = None  # made when first needed
        # What checkpoints may append to (see _checkpoint): the record's fields that lines
        # cannot change, as stored (None: not to append to: not stored whole by this execution
        # nor read with whole lines, or the backend does not append), the number of steps
        # stored, the length of the lines stored after the first one (0: none: the first
        # appended line starts with a newline), and how long they may grow at the run's last
        # write of the invocation before it writes the record whole again (see _append_last).
        self.head: tuple[Any, ...] | None = None
        self.stored = 0
        self.tail = 0
        self.room = 0
        if version is not None and record.stored_tail is not None and store.appends:
            # As read: lines may follow it (compare-and-swap on the version read).
            self.head = record.head_key()
            self.stored = len(record.steps)
            self.tail = record.stored_tail
            self.room = max(record.stored_len, _MIN_ROOM)

    async def save(self, *, last: bool = False) -> bytes:
        """Store the record whole (compare-and-swap on the version read); return what was
        written.

        ``last``: the invocation's final write of this run, which also ends its claim.
        """
        record = self.record
        record.updated_at = self.clock()
        data = record.encode()
        head = record.head_key() if not last and self.store.appends else None
        # Before the write: branches of the run may record steps while it is under way.
        self.dirty = False
        stored, record.changed = len(record.steps), None
        self.head = None
        await self.store.save_run(self, data, last=last)  # (sets the version and index entries)
        self.head, self.stored, self.tail, self.room = head, stored, 0, max(len(data), _MIN_ROOM)
        return data

    async def _append_last(self) -> bool:
        """The invocation's last write of a paused run, appended if it can be: the record is
        appendable as stored, none of its fields but the steps changed, and the lines stay
        within ``room`` (else it is written whole, one line again, so that a run advanced
        invocation after invocation keeps a record of bounded lines: what decoding reads).
        Whether it was. Appending spares a new file per run and invocation (the file backend
        writes a whole record to a new file renamed over the old one).
        """
        record = self.record
        if (
            self.head is None
            or self.version is None
            or record.status != "paused"
            or record.head_key() != self.head
            or not self.store.claims_are_locks  # (a lease ends with a whole write)
        ):
            return False
        changed = record.changed or ()
        lines = record.append_lines(self.stored, changed)
        if not lines or self.tail + len(lines) + 1 > self.room:
            return False
        steps = record.steps
        times = [
            t
            for i in (*changed, *range(self.stored, len(steps)))
            for t in (steps[i].get("at"), steps[i].get("end"))
            if type(t) in (float, int)
        ]
        await self._append(lines)
        # As a reader finds it: the record's updated_at is the time of its latest step.
        record.updated_at = max([record.updated_at, *times])
        return True

    async def _checkpoint(self) -> None:
        """Store what changed since the last write: appended to the record where the backend
        appends, the record was written whole by this execution or read ending with a whole
        line (so that no line a crash cut short comes before the new ones), and none of its
        fields but the steps changed since; else the whole record.

        Appending keeps a long run's checkpoints linear (a whole write grows with the
        journal); the run's last write of the invocation writes it whole, one line again,
        unless it can append within the record's room (see _append_last).
        """
        record = self.record
        if self.head is None or self.version is None or record.head_key() != self.head:
            await self.save()
            return
        lines = record.append_lines(self.stored, record.changed or ())
        if lines is None:
            await self.save()
            return
        if lines:
            await self._append(lines)
        else:
            self.dirty = False
            record.changed = None

    async def _append(self, lines: bytes) -> None:
        """Append ``lines`` (the steps since the last write) to the stored record."""
        record = self.record
        self.dirty = False
        stored, record.changed = len(record.steps), None
        if not self.tail:
            lines = b"\n" + lines  # the first line, written whole, does not end with one
        head, self.head = self.head, None  # should the append fail, the next write is whole
        await self.store.append_run(self, lines)  # (sets the version and index entries)
        self.head, self.stored, self.tail = head, stored, self.tail + len(lines)

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
                    await self._checkpoint()

    async def read_state(self, name: str, default: Any) -> str:
        """Return the JSON text of state ``name``, or of ``default`` if it is not set."""
        return dumps(await self.store.read_state(name, default), f"the default for {name!r}")

    async def write_state(self, name: str, value_json: str) -> None:
        await self.store.write_state(name, value_json)

    def state_triggered(self, name: str) -> bool:
        """Whether workflows are started by changes of state ``name``."""
        return self.invocation.state_triggered(name)

    async def deliver(
        self, kind: str, name: str, args: Any, event_id: str, *, again: bool = False
    ) -> None:
        """Deliver an event or state change recorded by the run (see ``RunEngine``)."""
        await self.invocation.deliver(kind, name, args, event_id, again=again)

    async def execute(self, workflow: Workflow) -> RunResult | None:
        """Replay the run to its next stop and store it. ``None`` if it was lost to another
        invocation."""
        record = self.record
        # Whatever it waited for is over; a primitive that suspends it again says what for.
        record.wake_at = None
        record.wait_event = None
        cursor = root_cursor(self)
        journal = cursor.journal
        ctx = Context(cursor)
        try:
            if workflow.takes_args:
                result = await workflow.fn(ctx, record.args)
            else:
                result = await workflow.fn(ctx)
            cursor.finish_check()
            record.result = json.loads(dumps(result, f"the result of workflow {workflow.name!r}"))
            record.status = "succeeded"
        except BaseException as exc:
            fatal = journal.fatal
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
            elif cursor.suspended and all(isinstance(e, Exception | Suspend) for e in leaves(exc)):
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
            if cursor.suspended:
                record.status = "paused"  # it caught the Suspend and returned: still paused
        if record.status == "paused":
            record.wake_at = journal.resume_at()
            if journal.due_now:
                # A branch paused until the next invocation, which replays the run anyway:
                # a branch waiting for an event there suspends again.
                record.wait_event = None
        else:
            record.wake_at = record.wait_event = None
        try:
            data = b"" if await self._append_last() else await self.save(last=True)
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
                await self.store.finish_run(record.run_id, data, self.version)
        return run_result(record)


def _traceback_of(failure: BaseException) -> str:
    text = bounded_traceback(failure)
    if isinstance(failure, SideEffectError) and failure.__cause__ is None and failure.traceback:
        # Replayed: the side effect's exception is gone, its traceback was recorded.
        text += f"\nThe side effect raised, when it ran:\n{failure.traceback}"
    return text


def create_runs(
    clock: Callable[[], float],
    workflows: Sequence[Workflow],
    trigger: str,
    args: Any,
    what: str | None = None,
) -> list[RunRecord]:
    """New (unsaved) pending records, one per workflow bound to ``trigger``; ``what`` names
    the args in a SerializationError (default: "the args for trigger ...")."""
    args = json.loads(dumps(args, what or f"the args for trigger {trigger!r}"))
    now = clock()
    return [
        RunRecord(run_id=new_run_id(), workflow=w.name, trigger=trigger, args=args, created_at=now)
        for w in workflows
    ]


async def invoke(
    store: Store,
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
        results = await _invoke(store, workflows, new, max_concurrency, stop_at, shard)
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
    store: Store,
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
    invocation = Invocation(store, workflows)
    if shard is None or shard.first:
        new = [*new, *await _scheduled(invocation)]
    try:
        due = await store.list_due(shard)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    invocation.log = due.log
    async with AsyncExitStack() as claims:
        # Claim every due run first, in one sweep, and hold the claims until the invocation
        # ends: a run another invocation holds is skipped, and nothing that is read below can
        # change under us. (Claiming run by run as they execute measured slower: each claim
        # then waits on the event loop's thread for the GIL held by the file threads.)
        if len(due.run_ids) + len(new) >= _MANY_RUNS:
            claims.enter_context(_rarer_collections())  # (before the records are read)
        held, claimed, damaged = await store.claim_due(claims, due)
        if len(held) < len(due.run_ids):
            telemetry.observer().held_elsewhere(len(due.run_ids) - len(held))
        jobs: list[tuple[RunRecord, str | None]] = []
        for record in new:
            if await store.claim_run(claims, record.run_id):
                jobs.append((record, None))
            else:
                # A fresh id held elsewhere can only be a hash collision of the claim (about
                # one in 2**62): keep the run for the next invocation rather than lose it.
                await store.create_run(record)
        # A record that cannot be used is reported and skipped, never written: the other runs
        # go on.
        jobs += claimed
        results = await _advance_all(invocation, jobs, due.index, max_concurrency, stop_at)
        results += [damaged_result(run_id, error) for run_id, error in damaged.items()]
        held += [record.run_id for record, version in jobs if version is None]
        results += await _event_rounds(invocation, claims, set(held), max_concurrency, stop_at)
    return results


async def _scheduled(invocation: Invocation) -> list[RunRecord]:
    """The runs every-invocation and cron workflows start in this invocation."""
    if not any(w.kind in ("every", "cron") for w in invocation.workflows.values()):
        return []
    from ._events import scheduled_runs  # (loaded when used: every import costs a cold start)

    return await scheduled_runs(invocation.store, invocation.workflows, new_run_id)


async def _advance_all(
    invocation: Invocation,
    jobs: list[tuple[RunRecord, str | None]],
    index: WaitIndex,
    max_concurrency: int,
    stop_at: float | None,
) -> list[RunResult]:
    results: list[RunResult | None] = [None] * len(jobs)
    queue = iter(range(len(jobs)))
    store, clock = invocation.store, invocation.clock
    observer = telemetry.observer()
    observer.due(len(jobs))

    async def worker() -> None:
        for i in queue:
            record, version = jobs[i]
            if stop_at is not None and clock() >= stop_at:
                if version is None:  # new: stored as it is, so that it stays due
                    # (A conflict: an idempotent start that another caller stored meanwhile.)
                    with contextlib.suppress(ConflictError):
                        await store.create_run(record)
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


#: From how many due runs an invocation makes the collector's passes rarer (see below).
_MANY_RUNS = 1000
#: The collector's first threshold then (Python's default: 700 allocations).
_RARER = 50_000
_collecting = threading.Lock()
_rarer_users = [0]  # invocations of this process in _rarer_collections now
_threshold: list[tuple[int, int, int]] = []  # the thresholds before the first of them


@contextlib.contextmanager
def _rarer_collections() -> Iterator[None]:
    """Make the cyclic garbage collector's passes rarer while an invocation of many runs goes
    on (its first threshold at 50,000 allocations, not 700); the thresholds are set back
    after, unless the program set its own meanwhile.

    The records of 100,000 runs live through the invocation: the young passes promoted them,
    and the full passes that followed walked them all, again and again: a sixth of the
    invocation on asyncio, a fifth on trio. Nothing is collected later than the thresholds
    say: cyclic garbage waits a little longer, what reference counting frees is freed at once.
    """
    import gc

    with _collecting:
        if not _rarer_users[0]:
            _threshold[:] = [gc.get_threshold()]
            first, *rest = _threshold[0]
            if 0 < first < _RARER:  # (0: the program turned collection off)
                gc.set_threshold(_RARER, *rest)
        _rarer_users[0] += 1
    try:
        yield
    finally:
        with _collecting:
            _rarer_users[0] -= 1
            first = _threshold[0][0]
            if not _rarer_users[0] and 0 < first < _RARER and gc.get_threshold()[0] == _RARER:
                gc.set_threshold(*_threshold[0])


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
    store = invocation.store
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
            if run_id not in held and await store.claim_run(claims, run_id):
                held.add(run_id)
        damaged: dict[str, DamagedRecordError] = {}
        jobs: list[tuple[RunRecord, str | None]] = [
            *await store.read_runs([r for r in due if r in held], damaged)
        ]
        results += await _advance_all(invocation, jobs, WaitIndex(()), max_concurrency, stop_at)
        results += [damaged_result(run_id, error) for run_id, error in damaged.items()]
    return results


def _workflows_of(results: list[RunResult]) -> str:
    return ", ".join(repr(n) for n in sorted({r.workflow for r in results})) or "no workflow"


async def advance(
    invocation: Invocation,
    record: RunRecord,
    version: str | None,
    indexed: Sequence[str] = (),
) -> RunResult | None:
    """Advance one claimed run: a new one (``version`` is ``None``) or a due one as read."""
    store, clock = invocation.store, invocation.clock
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
        await store.sync_index(record, list(indexed))
        return None
    execution = Execution(store, record, version, invocation, indexed)
    if version is None:
        # Stored before it executes, so that a crash from here on cannot lose it.
        try:
            await execution.save()
        except ConflictError:
            return None  # an idempotent start that another caller stored meanwhile
    elif record.status in FINISHED:
        # Complete an interrupted move.
        await store.finish_run(record.run_id, record.encode(), version)
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
    store = invocation.store
    record.updated_at = invocation.clock()
    try:
        return record, await store.update_run(record.run_id, record.encode(), version)
    except ConflictError:
        pass
    # An emitter woke it first. Where claims are locks apart from the data (the default
    # `write_and_release`), the run is still held here: execute what the emitter stored.
    # Where claims are leases in the object, the emitter's write ended the lease; the
    # emitter's invocation executes the run.
    if not store.claims_are_locks:
        return False
    try:
        found = await store.read_run(record.run_id)
    except DamagedRecordError:
        return False  # reported by the invocations that list it
    if found is None:
        return False
    stored, stored_version = found
    if stored.status in FINISHED or not _due(stored, invocation.clock()):
        return False
    return stored, stored_version


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
    from ._events import receive  # (loaded when used: imports cost a cold start)

    for name in names:
        logged = await invocation.store.read_event(name)
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
