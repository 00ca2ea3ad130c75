"""Delivering events and state changes: the runs they start, the waiting runs they wake; and
the runs that schedules (every invocation, cron) start."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from . import _steps as steps
from ._exceptions import ConflictError, DamagedRecordError
from ._record import RunRecord
from ._store import Store
from ._waits import pending_waits, sha256_hex
from ._workflow import Workflow

logger = logging.getLogger("asyncflow")

__all__ = [
    "deliver",
    "derived_run_id",
    "receive",
    "scheduled_runs",
    "wake_waiters",
]

_RESOLVE_ATTEMPTS = 20


def derived_run_id(event_id: str, workflow: str) -> str:
    """The id of the run that event ``event_id`` starts for ``workflow``: the same every time
    the event is delivered, so delivering it again after a crash starts nothing twice. It keeps
    the event id's time prefix, so it sorts like any run id."""
    digest = sha256_hex(f"{event_id}\0{workflow}")
    return event_id[:14] + digest[:6]


async def deliver(
    store: Store,
    workflows: Mapping[str, Workflow],
    kind: str,
    name: str,
    args: Any,
    event_id: str,
    *,
    again: bool = False,
) -> list[str]:
    """Store a run of each workflow that ``kind``/``name`` triggers and, for an event, wake the
    runs waiting for it. ``args`` are JSON round-tripped already. Returns the runs made due.

    ``again``: the event may have been delivered before (a replay after a crash), so runs that
    exist already, even finished, are not started again.
    """
    due: list[str] = []
    if kind == "event":
        # Logged before the index is listed: a run whose index entry this emitter does not see
        # (written after the listing) finds the event here at its next invocation.
        await store.log_event(event_id, name, args)
    trigger = name if kind == "event" else f"{kind}:{name}"
    for workflow in workflows.values():
        if workflow.kind != kind or workflow.trigger != name:
            continue
        run_id = derived_run_id(event_id, workflow.name)
        if again and await store.is_finished(run_id):
            continue
        record = RunRecord(
            run_id=run_id,
            workflow=workflow.name,
            trigger=trigger,
            args=args,
            created_at=store.clock(),
        )
        try:
            await store.create_run(record)
        except ConflictError:
            continue  # delivered before
        due.append(run_id)
    if kind == "event":
        due += await wake_waiters(store, name, args, event_id)
    return due


async def wake_waiters(store: Store, event: str, args: Any, event_id: str) -> list[str]:
    """Hand event ``event`` to every run waiting for it since before ``event_id``; return them."""
    index = await store.wait_index()
    waiting = index.waiting_for(event, event_id)
    woken = [False] * len(waiting)
    limiter = anyio.CapacityLimiter(64)  # each is a read and a write: overlap their waits

    async def wake(i: int, run_id: str) -> None:
        async with limiter:
            woken[i] = await _resolve(store, run_id, event, args, event_id)
            if woken[i]:
                # The record no longer waits: drop its entries so the next listing sees it due.
                # (A crash before this leaves entries the log contradicts: the next invocation
                # reads the run instead of trusting them.)
                await store.unindex(index.names(run_id))

    async with anyio.create_task_group() as tg:
        for i, run_id in enumerate(waiting):
            tg.start_soon(wake, i, run_id)
    return [run_id for run_id, ok in zip(waiting, woken, strict=True) if ok]


async def _resolve(store: Store, run_id: str, event: str, args: Any, event_id: str) -> bool:
    """Record ``args`` as the outcome of the run's pending ``wait_event``, by compare-and-swap:
    a run receives each event once, and an invocation advancing the run meanwhile either sees
    the event or loses its write (and replays with it next time)."""
    clock = store.clock
    for _ in range(_RESOLVE_ATTEMPTS):
        try:
            found = await store.read_run(run_id)
        except DamagedRecordError as exc:
            # Reported (and skipped) by every invocation; the event still reaches the others.
            logger.error("run %s skipped: %s", run_id, exc, extra={"summarised": True})
            return False
        if found is None:
            return False
        record, version = found
        if record.status != "paused" or not receive(record, event, args, event_id, clock()):
            return False
        record.updated_at = clock()
        try:
            await store.update_run(run_id, record.encode(), version)
        except ConflictError:
            continue
        return True
    return False


def receive(record: RunRecord, event: str, args: Any, event_id: str, now: float) -> bool:
    """Hand the event to the earliest wait of ``record`` for it that began before it (in
    memory, the wait ending at ``now``); ``False`` if none does, or the run received this very
    event already."""
    if record.wait_event != event:
        return False
    if any(step.get("event") == event_id for step in record.steps):
        return False  # (a second wait begun in the same millisecond on another clock)
    for index in pending_waits(record, event):
        if event_id > record.steps[index]["since"]:
            record.replace(index, *steps.received(record.steps[index], args, event_id, now))
            record.wait_event = None
            record.wake_at = None
            return True
    return False  # emitted before these waits began


async def scheduled_runs(
    store: Store,
    workflows: Mapping[str, Workflow],
    new_id: Callable[[], str],
) -> list[RunRecord]:
    """New runs for this invocation: one per every-invocation workflow, one per cron workflow
    with a tick since the last invocation that checked it."""
    records = []
    now = store.clock()
    for workflow in workflows.values():
        args: Any = None
        if workflow.kind == "cron":
            assert workflow.cron is not None
            tick = await store.cron_tick(workflow.name, workflow.cron, now)
            if tick is None:
                continue
            from datetime import datetime, timezone

            args = {"tick": datetime.fromtimestamp(tick, timezone.utc).isoformat()}
        elif workflow.kind != "every":
            continue
        trigger = "every" if workflow.kind == "every" else f"cron:{workflow.trigger}"
        records.append(
            RunRecord(
                run_id=new_id(), workflow=workflow.name, trigger=trigger, args=args, created_at=now
            )
        )
    return records
