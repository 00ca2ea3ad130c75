"""Shards: n invocations at once, each advancing a disjoint share of the due runs.

``flow.run(shard=(k, n))`` advances only the due runs whose id hashes to ``k`` modulo ``n``,
so n invocations started together (n Lambda invocations fanned out by SQS, n processes) never
contend for a claim: each run belongs to exactly one of them. The hash is CRC-32 of the run
id's UTF-8 bytes: the same in every process, on every machine and Python version (``hash()``
is salted per process), and ``zlib`` is built in, so a cold start pays no import for it.

What is not a due run is shared out so that no work is done twice or fought over:

- schedules (``every_trigger`` and ``cron_trigger`` workflows) are ticked by shard 0 alone:
  an every-invocation workflow would otherwise start n runs per round, and the n shards would
  race for each cron mark (a compare-and-swap that all but one lose, every tick);
- pruning the event log is shard 0's too: each expired event is deleted once, not n times;
- runs this invocation starts (``flow.run(trigger, shard=...)``) or that events emitted during
  it start or wake are advanced here, whatever their shard: they are new or were just made
  due by this invocation, and their claim keeps them once if another invocation reaches them
  too. From their next pause on they belong to their own shard;
- a run waiting for an event finds the logged event when its own shard reads it: the log is
  consulted per run, and each shard consults it for its own runs only;
- ``emit`` takes no shard: delivering an event is per waiting run, in whatever shard. The
  invocation that follows a delivery is unsharded (it contends with running shards for the
  runs it finds due, which claims keep correct).

Changing n between rounds is safe: a run belongs to one shard of whatever n a round uses, and
claims still keep it once if two rounds with different n overlap.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import NamedTuple, TypeVar

from ._exceptions import UsageError

__all__ = ["Shard", "as_shard", "parse_shard", "shard_of"]

V = TypeVar("V")


def shard_of(run_id: str, count: int) -> int:
    """The shard (``0 <= k < count``) that run ``run_id`` belongs to among ``count``."""
    return zlib.crc32(run_id.encode("utf-8", "surrogatepass")) % count


class Shard(NamedTuple):
    """Shard ``k`` of ``n``: the runs whose id hashes to ``k`` modulo ``n`` (a pair, as
    :meth:`asyncflow.Flow.run` takes it)."""

    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    @property
    def first(self) -> bool:
        """Whether this shard also does the work that is not per run (schedules, pruning)."""
        return self.k == 0

    def owns(self, run_id: str) -> bool:
        return self.n == 1 or shard_of(run_id, self.n) == self.k

    def keep(self, by_run: Mapping[str, V]) -> dict[str, V]:
        """The items of ``by_run`` (keyed by run id) that belong to this shard."""
        return {run_id: v for run_id, v in by_run.items() if self.owns(run_id)}


def as_shard(value: object, what: str = "shard") -> Shard | None:
    """``value`` (a pair ``(k, n)`` of integers, ``0 <= k < n``; or ``None``) as a
    :class:`Shard`.

    Raises:
        UsageError: ``value`` is not such a pair (named ``what``).
    """
    if value is None:
        return None
    if isinstance(value, tuple | list) and len(value) == 2:
        k, n = value
        if all(isinstance(x, int) and not isinstance(x, bool) for x in (k, n)):
            if 0 <= k < n:
                return Shard(k, n)
            raise UsageError(
                f"{what} ({k}, {n}) is out of range: shard k of n needs 0 <= k < n"
                " (the shards of 4 invocations are 0, 1, 2 and 3)"
            )
    raise UsageError(f"{what} must be a pair (k, n) of integers with 0 <= k < n, not {value!r}")


def parse_shard(text: str) -> Shard:
    """A ``K/N`` command-line value as a :class:`Shard`.

    Raises:
        UsageError: ``text`` is not ``K/N`` with ``0 <= K < N``.
    """
    k, sep, n = text.partition("/")
    if not sep or not all(x.isascii() and x.isdigit() for x in (k, n)):
        raise UsageError(f"--shard must be K/N (e.g. 0/4: the first of 4 shards), not {text!r}")
    shard = as_shard((int(k), int(n)), "--shard")
    assert shard is not None
    return shard
