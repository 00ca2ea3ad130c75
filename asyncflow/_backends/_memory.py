"""The in-memory backend: for tests, and for flows embedded in one long-lived process."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from .._backend import Backend, Entry, Key
from .._exceptions import ConfigError, ConflictError

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Keeps everything in a dict of this process; gone when the object is.

    Every operation completes without yielding to the event loop, so each is atomic with
    respect to other tasks. Claims hold within this object only.
    """

    def __init__(self) -> None:
        self._data: dict[Key, Entry] = {}
        self._held: set[Key] = set()
        self._versions = itertools.count(1)

    def __repr__(self) -> str:
        return "MemoryBackend()"

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """``memory:``"""
        if url not in ("memory:", "memory://"):
            raise ConfigError(f"backend {url!r}: a memory backend's URL is 'memory:'")
        return cls()

    def url(self) -> str:
        return "memory:"

    async def read(self, key: Key) -> Entry | None:
        return self._data.get(key)

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        return [self._data.get(key) for key in keys]

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        current = self._data.get(key)
        _check(self, key, current, if_version=if_version, if_absent=if_absent)
        version = str(next(self._versions))
        self._data[key] = Entry(bytes(data), version)
        return version

    async def create_many(self, items: Sequence[tuple[Key, bytes]]) -> list[str | ConflictError]:
        results: list[str | ConflictError] = []
        for key, data in items:  # (without yielding: all at once, as each write is)
            if key in self._data:
                results.append(
                    ConflictError(f"{self.locate(key)} already exists", location=self.locate(key))
                )
                continue
            version = str(next(self._versions))
            self._data[key] = Entry(bytes(data), version)
            results.append(version)
        return results

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        current = self._data.get(key)
        if if_version is not None:
            _check(self, key, current, if_version=if_version, if_absent=False)
        self._data.pop(key, None)

    async def list(self, namespace: str) -> dict[str, str]:
        return {name: entry.version for (ns, name), entry in self._data.items() if ns == namespace}

    @asynccontextmanager
    async def claim(self, key: Key) -> AsyncIterator[bool]:
        if key in self._held:
            yield False
            return
        self._held.add(key)
        try:
            yield True
        finally:
            self._held.discard(key)

    def locate(self, key: Key) -> str:
        return f"memory:{key[0]}/{key[1]}"


def _check(
    backend: Backend, key: Key, current: Entry | None, *, if_version: str | None, if_absent: bool
) -> None:
    """Raise ConflictError unless the conditions of a write hold for ``current``."""
    if if_absent and current is not None:
        raise ConflictError(f"{backend.locate(key)} already exists", location=backend.locate(key))
    if if_version is not None and (current is None or current.version != if_version):
        found = "nothing" if current is None else f"version {current.version}"
        raise ConflictError(
            f"{backend.locate(key)} changed: expected version {if_version}, found {found}",
            location=backend.locate(key),
        )
