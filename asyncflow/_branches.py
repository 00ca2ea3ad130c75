"""Parallel branches inside one run: ``Context.gather`` and ``Context.map``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._exceptions import NonDeterminismError, UsageError
from ._record import step_text

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["bind", "gather"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


def bind(fn: Callable[[Context, I], Awaitable[T]], item: I) -> Callable[[Context], Awaitable[T]]:
    """The branch ``fn(child, item)`` of a map."""

    def branch(c: Context) -> Awaitable[T]:
        return fn(c, item)

    return branch


async def gather(
    ctx: Context,
    branches: Sequence[Callable[[Context], Awaitable[Any]]],
    limit: int | None,
    return_exceptions: bool,
) -> Any:
    """See :meth:`Context.gather`."""
    from ._context import Suspend

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(
            f"the limit of gather() and map() must be a positive integer, not {limit!r}"
        )
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
    step = ctx._replay("gather", None)
    if step is None:
        ctx._append({"kind": "gather", "n": n}, step_text("gather", n=str(n)))
    elif step.get("n") != n:
        ctx._fatal = NonDeterminismError(
            f"run {ctx.run_id} of workflow {ctx.workflow!r}: {ctx._where(ctx._pos - 1)} was"
            f" recorded as gather() of {step.get('n')} branches but the workflow now gathers"
            f" {n}. The code changed under a paused run; the run's record is kept as it was."
        )
        raise ctx._fatal
    pos = ctx._pos - 1
    results: list[Any] = [None] * n
    errors: list[Exception | None] = [None] * n
    paused = False

    async def run(i: int) -> None:
        nonlocal paused
        # Made in the branch's own task: its steps must come from there.
        child = ctx._child(f"{pos}.{i}")
        try:
            results[i] = await branches[i](child)
            child._finish_check()
        except Suspend:
            pass
        except Exception as exc:
            errors[i] = exc
        if child._suspended:
            paused = True

    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await run(i)

    # Siblings of a failing branch are not cancelled: each branch settles on its own, so its
    # journal holds all it did and a replay reproduces every branch the same way.
    ctx._journal.gathers += 1
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n if limit is None else min(limit, n)):
                tg.start_soon(worker)
    finally:
        ctx._journal.gathers -= 1
    fatal = ctx._fatal
    if fatal is not None:
        raise fatal
    if paused:
        ctx._suspended = True
        raise Suspend
    if return_exceptions:
        return [e if e is not None else r for r, e in zip(results, errors, strict=True)]
    for error in errors:
        if error is not None:
            raise error
    return results
