"""One invocation: find the due runs, claim them, replay them concurrently, store them."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from ._backend import Backend, Key
from ._context import Context, Suspend
from ._exceptions import BackendError, ConflictError
from ._record import FINISHED, RunRecord, decode_state, dumps, encode_state, new_run_id
from ._results import RunResult

__all__ = ["Execution", "Workflow", "create_runs", "invoke", "read_state"]

logger = logging.getLogger("asyncflow")

ACTIVE = "active"  # pending and paused runs
DONE = "finished"  # succeeded and failed runs
STATE = "state"


@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: str
    fn: Callable[..., Awaitable[Any]]
    takes_args: bool


class Execution:
    """One run being advanced: its record, the version stored, and its checkpoints."""

    __slots__ = ("backend", "clock", "dirty", "key", "record", "version")

    def __init__(
        self, backend: Backend, clock: Callable[[], float], record: RunRecord, version: str | None
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.record = record
        self.key: Key = (ACTIVE, record.run_id)
        self.version = version  # None: not stored yet
        self.dirty = False  # steps recorded since the last checkpoint

    async def save(self, *, last: bool = False) -> bytes:
        """Store the record (compare-and-swap on the version read); return what was written.

        ``last``: the invocation's final write of this run, which also ends its claim.
        """
        self.record.updated_at = self.clock()
        data = self.record.encode()
        write = self.backend.write_and_release if last else self.backend.write
        self.version = await write(
            self.key, data, if_version=self.version, if_absent=self.version is None
        )
        self.dirty = False
        return data

    async def checkpoint_if_dirty(self) -> None:
        if self.dirty:
            await self.save()

    async def read_state(self, name: str, default: Any) -> str:
        """Return the JSON text of state ``name``, or of ``default`` if it is not set."""
        return dumps(await read_state(self.backend, name, default), f"the default for {name!r}")

    async def write_state(self, name: str, value_json: str) -> None:
        # Each key is its own object, written whole: writers of other keys are never lost.
        await self.backend.write((STATE, name), encode_state(name, value_json))

    async def execute(self, workflow: Workflow) -> RunResult | None:
        """Replay the run to its next stop and store it. ``None`` if it was lost to another
        invocation."""
        record = self.record
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
                logger.warning("run %s was changed by another invocation; skipped", record.run_id)
                return None
            if isinstance(fatal, BackendError):
                raise fatal from None  # storage is failing: stop, leave the run as stored
            if fatal is not None:
                failure: BaseException | None = fatal  # whatever the workflow made of it
            elif ctx._suspended and all(isinstance(e, Exception | Suspend) for e in _leaves(exc)):
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
                record.error = f"{type(failure).__name__}: {failure}"
                logger.info("run %s of %s failed: %s", record.run_id, workflow.name, record.error)
        else:
            if ctx._suspended:
                record.status = "paused"  # it caught the Suspend and returned: still paused
        try:
            data = await self.save(last=True)
            if record.status in FINISHED:
                await finish(self.backend, record.run_id, data, self.version)
        except ConflictError:
            logger.warning("run %s was changed by another invocation; skipped", record.run_id)
            return None
        return RunResult._of(record)


async def read_state(backend: Backend, name: str, default: Any) -> Any:
    """The value of state ``name``, or ``default`` if it was never set."""
    key = (STATE, name)
    entry = await backend.read(key)
    if entry is None:
        return default
    return decode_state(entry.data, name, backend.locate(key))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


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
) -> list[RunResult]:
    """Advance ``new`` runs and every run due before this call, at most ``max_concurrency``
    at once; report them new first, then resumed oldest first."""
    listed = await backend.list(ACTIVE)
    async with AsyncExitStack() as claims:
        # Claim every due run first, in one sweep, and hold the claims until the invocation
        # ends: a run another invocation holds is skipped, and nothing that is read below can
        # change under us. (Claiming run by run as they execute measured slower: each claim
        # then waits on the event loop's thread for the GIL held by the file threads.)
        names = sorted(listed)  # ids sort by creation time
        keys = [(ACTIVE, run_id) for run_id in names]
        # Changed since the listing (entry None): another invocation advanced it meanwhile, so
        # its new state was not due when this one began. Backends with leases take the lease
        # and read in one request per run here.
        entries = await claims.enter_async_context(
            backend.claim_read(keys, [listed[n] for n in names])
        )
        jobs: list[tuple[RunRecord, str | None]] = []
        for record in new:
            key = (ACTIVE, record.run_id)
            if await claims.enter_async_context(backend.claim(key)):
                jobs.append((record, None))
            else:
                # A fresh id held elsewhere can only be a hash collision of the claim (about
                # one in 2**62): keep the run for the next invocation rather than lose it.
                await backend.write(key, record.encode(), if_absent=True)
        # Check every claimed record before anything executes: a damaged file stops the
        # invocation here, before it changed anything.
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None:
                jobs.append((RunRecord.decode(entry.data, backend.locate(key)), entry.version))
        results: list[RunResult | None] = [None] * len(jobs)
        queue = iter(range(len(jobs)))

        async def worker() -> None:
            for i in queue:
                results[i] = await advance(backend, clock, workflows, *jobs[i])

        async with anyio.create_task_group() as tg:
            for _ in range(min(max_concurrency, len(jobs))):
                tg.start_soon(worker)
    return [r for r in results if r is not None]


async def advance(
    backend: Backend,
    clock: Callable[[], float],
    workflows: dict[str, Workflow],
    record: RunRecord,
    version: str | None,
) -> RunResult | None:
    """Advance one claimed run: a new one (``version`` is ``None``) or a due one as read."""
    execution = Execution(backend, clock, record, version)
    if version is None:
        # Stored before it executes, so that a crash from here on cannot lose it.
        await execution.save()
    elif record.status in FINISHED:
        # Complete an interrupted move.
        await finish(backend, record.run_id, record.encode(), version)
        return None
    workflow = workflows.get(record.workflow)
    if workflow is None:
        logger.warning(
            "run %s belongs to workflow %r, which this flow does not define; left as is",
            record.run_id,
            record.workflow,
        )
        return None
    return await execution.execute(workflow)
