"""Helpers for testing code that uses asyncflow, and for testing a backend of your own.

- :class:`MemoryBackend`: keeps runs in this process (``asyncflow.setup(MemoryBackend())``
  or ``asyncflow.setup("memory:")``).
- :class:`MockClock`: a clock your test moves by hand (``asyncflow.setup(clock=clock)``).
- :func:`check_backend` and :data:`BACKEND_CHECKS`: the conformance suite every backend must
  pass; run it against your own :class:`asyncflow.Backend`.
"""

from __future__ import annotations

import anyio.lowlevel

from ._backends._memory import MemoryBackend
from ._conformance import BACKEND_CHECKS, check_backend

__all__ = ["BACKEND_CHECKS", "MemoryBackend", "MockClock", "check_backend"]


class MockClock:
    """A clock that stands still until :meth:`advance` moves it.

    Pass it to :func:`asyncflow.setup` as ``clock=``; asyncflow reads the time through it (run
    timestamps, ``c.now()``, ``c.sleep``, ``wait_event`` timeouts, cron schedules), so tests
    move time forward instead of sleeping: ``clock.advance(3600)`` then ``await flow.run()``
    resumes a run that slept an hour.

    Args:
        start: the time to start at, in seconds since the epoch.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        """The current time, in seconds since the epoch."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` at once, instead of waiting.

        asyncflow sleeps through the flow's clock when it has this method (between the
        attempts of a retried side effect), so a test never waits for real time.
        """
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._now += seconds

    def __repr__(self) -> str:
        return f"MockClock({self._now!r})"
