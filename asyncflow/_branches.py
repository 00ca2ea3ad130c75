"""Parallel branches inside one run: ``Context.gather`` and ``Context.map``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from . import _steps as steps
from ._cursor import Cursor, Suspend
from ._exceptions import NonDeterminismError, UsageError
from ._validate import positive_int

__all__ = ["bind", "gather"]

C = TypeVar("C")  # the context type (asyncflow.Context)
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


def bind(fn: Callable[[C, I], Awaitable[T]], item: I) -> Callable[[C], Awaitable[T]]:
    """The branch ``fn(child, item)`` of a map."""

    def branch(c: C) -> Awaitable[T]:
        return fn(c, item)

    return branch


async def gather(
    cursor: Cursor,
    make_context: Callable[[Cursor], C],
    branches: Sequence[Callable[[C], Awaitable[Any]]],
    limit: int | None,
    return_exceptions: bool,
) -> Any:
    """See :meth:`Context.gather`: each branch gets the context ``make_context`` makes of a
    child of ``cursor``."""
    if limit is not None:
        positive_int(limit, "the limit of gather() and map()", error=UsageError)
    for branch in branches:
        if inspect.iscoroutine(branch):
            branch.close()  # never to run: close it rather than leave a "never awaited" warning
    for branch in branches:
        if not callable(branch):
            raise UsageError(
                f"a branch of gather() must be an async callable taking a Context, not"
                f" {type(branch).__name__} (pass the function, not a call of it)"
            )
    n = len(branches)
    step = cursor.replay("gather", None)
    if step is None:
        cursor.append(*steps.gather(n))
    elif step.get("n") != n:
        record = cursor.record
        raise cursor.fail(
            NonDeterminismError(
                f"run {record.run_id} of workflow {record.workflow!r}:"
                f" {cursor.where(cursor.pos - 1)} was recorded as gather() of {step.get('n')}"
                f" branches but the workflow now gathers {n}. The code changed under a paused"
                " run; the run's record is kept as it was."
            )
        )
    pos = cursor.pos - 1
    results: list[Any] = [None] * n
    errors: list[Exception | None] = [None] * n
    paused = False

    async def run(i: int) -> None:
        nonlocal paused
        # Made in the branch's own task: its steps must come from there.
        child = cursor.child(steps.branch_label(pos, i))
        try:
            results[i] = await branches[i](make_context(child))
            child.finish_check()
        except Suspend:
            pass
        except Exception as exc:
            errors[i] = exc
        if child.suspended:
            paused = True

    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await run(i)

    # Siblings of a failing branch are not cancelled: each branch settles on its own, so its
    # journal holds all it did and a replay reproduces every branch the same way.
    journal = cursor.journal
    journal.gathers += 1
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n if limit is None else min(limit, n)):
                tg.start_soon(worker)
    finally:
        journal.gathers -= 1
    fatal = journal.fatal
    if fatal is not None:
        raise fatal
    if paused:
        cursor.paused()
    if return_exceptions:
        return [e if e is not None else r for r, e in zip(results, errors, strict=True)]
    for error in errors:
        if error is not None:
            raise error
    return results
