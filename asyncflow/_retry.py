"""Retry policies for side effects, and the waits between attempts."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ._exceptions import ConfigError
from ._record import dumps, step_text

if TYPE_CHECKING:
    from ._context import Context

logger = logging.getLogger("asyncflow")

__all__ = ["Retry", "attempt", "check_timeout", "pause_for", "schedule", "wait_until"]


@dataclass(frozen=True)
class Retry:
    """How a side effect is retried when an attempt fails.

    Attempt ``n`` (counting from 1) that fails with an exception matching ``on`` is followed by
    attempt ``n + 1`` after a wait of ``min(max_delay, initial * backoff ** (n - 1))`` seconds,
    shortened by up to ``jitter`` of itself (drawn from the run, the step and the attempt, so
    that a replay computes the same wait). A wait of at most ``durable_after`` seconds is slept
    in the invocation; a longer one suspends the run, which a later invocation resumes once
    the wait has passed. Once ``attempts`` attempts failed, or one failed with an exception
    ``on`` does not match, the workflow sees :class:`asyncflow.SideEffectError`.

    A side effect's ``timeout`` fails an attempt with :class:`TimeoutError`, retried like any
    other failure when ``on`` matches it (the default ``on`` does).

    Args:
        attempts: how many attempts in all, at least 1.
        initial: the wait after the first failed attempt, in seconds.
        backoff: the factor each further wait is multiplied by, at least 1.
        max_delay: no wait is longer than this.
        jitter: the fraction (0 to 1) a wait may be shortened by at random, so that runs failing
            together do not all retry at the same instant. 0 gives the exact schedule.
        on: the exception types worth retrying; others fail the side effect at once.
        durable_after: waits longer than this suspend the run instead of sleeping in the
            invocation. 0 suspends for every wait; ``math.inf`` never suspends.

    Raises:
        ConfigError: a value that cannot make a schedule.
    """

    attempts: int = 5
    initial: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5
    on: type[Exception] | tuple[type[Exception], ...] = Exception
    durable_after: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"Retry(attempts=) must be an integer, not {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigError(f"Retry(attempts=) must be at least 1, not {self.attempts}")
        _number("initial", self.initial, low=0)
        _number("backoff", self.backoff, low=1)
        _number("max_delay", self.max_delay, low=0)
        _number("jitter", self.jitter, low=0, high=1)
        _number("durable_after", self.durable_after, low=0, infinite=True)
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(t, type) and issubclass(t, Exception) for t in on):
            raise ConfigError(
                f"Retry(on=) must be an Exception subclass or a non-empty tuple of them,"
                f" not {self.on!r}"
            )
        object.__setattr__(self, "on", on)

    def retries(self, error: BaseException) -> bool:
        """Whether a failed attempt with ``error`` is worth another one."""
        return isinstance(error, self.on)

    def delay(self, failed: int, seed: str) -> float:
        """The wait after the ``failed``-th failed attempt, jittered from ``seed``."""
        try:
            base = min(self.max_delay, self.initial * self.backoff ** (failed - 1))
        except OverflowError:  # many attempts with a steep backoff: long past max_delay
            base = self.max_delay
        # Seeded with text, random.Random hashes it with SHA-512: the same draw in every
        # process, whatever PYTHONHASHSEED says. (Imported here: only failures need it, and
        # `import asyncflow` should not pay for it.)
        import random

        return base * (1 - self.jitter * random.Random(f"{seed}#{failed}").random())


def _number(
    name: str, value: object, *, low: float, high: float = math.inf, infinite: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok and math.isinf(value) and not infinite:  # type: ignore[arg-type]
        ok = False
    if not ok or not low <= value <= high:  # type: ignore[operator]
        bound = f"from {low} to {high}" if high != math.inf else f"at least {low}"
        raise ConfigError(f"Retry({name}=) must be a number {bound}, not {value!r}")


def check_timeout(timeout: object, where: str) -> float | None:
    """``timeout`` as seconds, or ConfigError naming ``where``."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout <= 0
    ):
        raise ConfigError(f"the timeout of {where} must be a positive number, not {timeout!r}")
    return float(timeout)


async def pause_for(clock: Callable[[], float], seconds: float) -> None:
    """Wait ``seconds`` in the invocation: through the clock's own ``sleep`` if it has one
    (:class:`asyncflow.testing.MockClock` moves itself instead of waiting), else for real."""
    sleep: Any = getattr(clock, "sleep", None)
    if sleep is not None and inspect.iscoroutinefunction(sleep):
        await sleep(seconds)
    else:
        await anyio.sleep(seconds)


def schedule(
    ctx: Context, name: str, pos: int, retry: Retry, failed: int, error: dict[str, str]
) -> float:
    """Record the ``failed``-th failed attempt of the side effect at ``pos``; return when
    the next attempt is due."""
    now = ctx._exec.clock()
    retry_at = now + retry.delay(failed, f"{ctx.run_id}/{ctx._path}/{pos}")
    # Stored with the attempt: should this invocation die during the wait, the run is not
    # due before the retry time. (The earliest of the waits under way; the run's end sets
    # it anew.)
    record = ctx._record
    if record.wake_at is None or not now < record.wake_at <= retry_at:
        record.wake_at = retry_at
    step = {"kind": "sideeffect", "name": name, "attempts": failed}
    step.update(last_error=error, retry_at=retry_at)
    text = step_text(
        "sideeffect",
        name,
        attempts=str(failed),
        last_error=dumps(error, ""),
        retry_at=dumps(retry_at, "the retry time"),
    )
    ctx._replace(pos, step, text)
    logger.info(
        "%s %s: side effect %r failed (attempt %d of %d), next attempt at %.3f: %s: %s",
        ctx.workflow,
        ctx.run_id,
        name,
        failed,
        retry.attempts,
        retry_at,
        error["type"],
        error["message"],
    )
    return retry_at


async def wait_until(ctx: Context, retry: Retry | None, retry_at: float) -> None:
    """Wait until ``retry_at``: in the invocation if the wait is short, else suspend the
    run until then (a replay before then comes back here and suspends again)."""
    clock = ctx._exec.clock
    remaining = retry_at - clock()
    if remaining <= 0:
        return
    # Without a policy now (the code changed), retry without waiting any longer.
    if retry is None:
        return
    if remaining > retry.durable_after:
        ctx._suspend(retry_at)
    await pause_for(clock, remaining)


async def attempt(
    name: str,
    fn: Callable[..., Awaitable[Any]],
    ctx: Context,
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
