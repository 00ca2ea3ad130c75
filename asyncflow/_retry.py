"""Retry policies for side effects (the side-effect runner, :mod:`asyncflow._sideeffect`,
follows them), and how a wait between attempts is slept."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from ._exceptions import ConfigError
from ._validate import number, positive_int

__all__ = ["Retry", "pause_for"]


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
        positive_int(self.attempts, "Retry(attempts=)", error=ConfigError)
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
    number(value, f"Retry({name}=)", error=ConfigError, low=low, high=high, infinite=infinite)


async def pause_for(clock: Callable[[], float], seconds: float) -> None:
    """Wait ``seconds`` in the invocation: through the clock's own ``sleep`` if it has one
    (:class:`asyncflow.testing.MockClock` moves itself instead of waiting), else for real."""
    sleep: Any = getattr(clock, "sleep", None)
    if sleep is not None and inspect.iscoroutinefunction(sleep):
        await sleep(seconds)
    else:
        await anyio.sleep(seconds)
