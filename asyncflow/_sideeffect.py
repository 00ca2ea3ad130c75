"""The side-effect runner: a side effect's attempts, their timeouts, the waits between them
(by its :class:`asyncflow.Retry` policy), and the recording of its outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio

from . import _steps as steps
from . import _telemetry as telemetry
from ._cursor import Cursor
from ._exceptions import SerializationError, SideEffectError
from ._record import bounded_traceback, dumps, storable_text
from ._retry import Retry, pause_for

__all__ = ["run_sideeffect"]


C = TypeVar("C")


async def run_sideeffect(
    ctx: C,
    cursor: Cursor,
    make_context: Callable[[Cursor], C],
    name: str,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: Retry | None = None,
    time_limit: float | None = None,
) -> Any:
    """Run side effect ``name`` (``fn(ctx, *args, **kwargs)``) in the context ``ctx`` (whose
    cursor is ``cursor``), or replay its recorded outcome. A retried side effect runs each
    attempt in a child context, made by ``make_context``."""
    step = cursor.replay("sideeffect", name)
    failed = 0  # attempts that failed so far
    retry_at: float | None = None
    if step is not None:
        if "value" in step:
            cursor.skip(step.get("span", 0))
            return step["value"]
        if "error" in step:
            cursor.skip(step.get("span", 0))
            error = step["error"]
            trace = error.get("traceback")
            raise SideEffectError(
                name,
                str(error.get("type")),
                str(error.get("message")),
                attempts=step.get("attempts", 1),
                traceback=trace if isinstance(trace, str) else None,
            )
        # Started but not finished: it paused inside, or waits to be retried. Enter it
        # again; its inner steps, recorded after it (or in its attempt's journal), replay.
        pos = cursor.pos - 1
        failed = step.get("attempts", 0)
        retry_at = step.get("retry_at")
    else:
        # The previous side effect's outcome must be stored before this one starts.
        await cursor.checkpoint()
        engine = cursor.engine
        dirty = engine.dirty
        pos = cursor.append(*steps.sideeffect_started(name))
        # Its start alone need not be stored: should the run crash before its outcome is,
        # the replay executes it again either way. (Branches starting together would
        # otherwise write the record once each.)
        engine.dirty = dirty
    record = cursor.record
    while True:
        if retry_at is not None:
            await _wait_until(cursor, retry, retry_at)
        # A retried side effect runs each attempt in a journal of its own: the next attempt
        # must not replay the steps of one that failed.
        inner = cursor if retry is None else cursor.child(steps.attempt_label(pos, failed + 1))
        try:
            try:
                with telemetry.span(
                    "asyncflow.sideeffect",
                    {"run_id": record.run_id, "step": name, "attempt": failed + 1},
                ):
                    attempt_ctx = ctx if inner is cursor else make_context(inner)
                    value = await _attempt(name, fn, attempt_ctx, args, kwargs, time_limit)
            finally:
                cursor.suspend_with(inner)
        except Exception as exc:
            # The run is broken (non-determinism...) or the body swallowed a pause: not
            # the side effect's failure.
            cursor.check_live()
            failed += 1
            error = {"type": type(exc).__qualname__, "message": storable_text(str(exc))}
            telemetry.logger.info(
                "%s %s: side effect %s raised %s: %s (attempt %d)",
                record.workflow,
                record.run_id,
                name,
                error["type"],
                error["message"],
                failed,
                extra=telemetry.run_extra(record.run_id, record.workflow, name),
            )
            if retry is not None and failed < retry.attempts and retry.retries(exc):
                retry_at = _schedule(cursor, name, pos, retry, failed, error)
                # Stored before the wait: a crash meanwhile must not forget the attempt.
                await cursor.checkpoint()
                continue
            error["traceback"] = bounded_traceback(exc)
            await _fail(cursor, name, pos, error, None if retry is None else failed, exc)
        try:
            cursor.check_live()  # the body may have swallowed a pause or a fatal error
            value_json = dumps(value, f"the value returned by side effect {name!r}")
        except SerializationError as exc:
            # It ran, but what it returned cannot be stored: its recorded failure, so that
            # replays raise it without running it again (not retried: it did its work).
            failed += 1
            error = {"type": "SerializationError", "message": str(exc)}
            await _fail(cursor, name, pos, error, None if retry is None else failed, exc)
        attempts = None if retry is None else failed + 1
        outcome, text = steps.sideeffect_returned(name, cursor.pos - pos - 1, attempts, value_json)
        cursor.replace(pos, outcome, text, end=True)
        await _store_outcome(cursor)
        return outcome["value"]  # what replays will return


async def _fail(
    cursor: Cursor,
    name: str,
    pos: int,
    error: dict[str, str],
    attempts: int | None,
    exc: Exception,
) -> NoReturn:
    """Record the side effect at ``pos`` as failed with ``error``; raise it to the caller."""
    outcome, text = steps.sideeffect_raised(name, cursor.pos - pos - 1, attempts, error)
    cursor.replace(pos, outcome, text, end=True)
    await _store_outcome(cursor)
    raise SideEffectError(
        name,
        error["type"],
        error["message"],
        attempts=attempts or 1,
        traceback=error.get("traceback"),
    ) from exc


async def _store_outcome(cursor: Cursor) -> None:
    """Store a side effect's outcome now if branches are running.

    Alone, a run stores an outcome when its next side effect starts (or the run stops), so
    a crash re-executes only the side effect in flight. With branches, "next" may be far
    off (a sibling in a long call): stored now, or a crash would execute it again.
    """
    if cursor.journal.gathers:
        await cursor.checkpoint()


def _schedule(
    cursor: Cursor, name: str, pos: int, retry: Retry, failed: int, error: dict[str, str]
) -> float:
    """Record the ``failed``-th failed attempt of the side effect at ``pos``; return when
    the next attempt is due."""
    record = cursor.record
    now = cursor.engine.clock()
    retry_at = now + retry.delay(failed, f"{record.run_id}/{cursor.path}/{pos}")
    # Stored with the attempt: should this invocation die during the wait, the run is not
    # due before the retry time. (The earliest of the waits under way; the run's end sets
    # it anew.)
    if record.wake_at is None or not now < record.wake_at <= retry_at:
        record.wake_at = retry_at
    cursor.replace(pos, *steps.sideeffect_retrying(name, failed, error, retry_at))
    telemetry.logger.info(
        "%s %s: side effect %r failed (attempt %d of %d), next attempt at %.3f: %s: %s",
        record.workflow,
        record.run_id,
        name,
        failed,
        retry.attempts,
        retry_at,
        error["type"],
        error["message"],
    )
    return retry_at


async def _wait_until(cursor: Cursor, retry: Retry | None, retry_at: float) -> None:
    """Wait until ``retry_at``: in the invocation if the wait is short, else suspend the
    run until then (a replay before then comes back here and suspends again)."""
    clock = cursor.engine.clock
    remaining = retry_at - clock()
    if remaining <= 0:
        return
    # Without a policy now (the code changed), retry without waiting any longer.
    if retry is None:
        return
    if remaining > retry.durable_after:
        cursor.suspend(retry_at)
    await pause_for(clock, remaining)


async def _attempt(
    name: str,
    fn: Callable[..., Awaitable[Any]],
    ctx: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    time_limit: float | None,
) -> Any:
    """One attempt of a side effect's body, failed with TimeoutError past ``time_limit``."""
    if time_limit is None:
        return await fn(ctx, *args, **kwargs)
    with anyio.move_on_after(time_limit) as scope:
        return await fn(ctx, *args, **kwargs)
    assert scope.cancelled_caught
    raise TimeoutError(f"side effect {name!r} did not finish within {time_limit:g} s")
