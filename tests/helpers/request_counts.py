"""Counting the HTTP requests aiobotocore clients make, per operation (S3, DynamoDB tests)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Requests:
    """Counts the HTTP requests of the clients built from :meth:`session`, per operation,
    with botocore's own event hooks (every attempt, retries included)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def session(self) -> Any:
        from aiobotocore.session import get_session

        session = get_session()
        session.register("before-send", self._count)
        return session

    def _count(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1
