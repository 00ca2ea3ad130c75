"""The storage interface every backend implements."""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio

from ._exceptions import AsyncflowError, ConfigError, ConflictError, DamagedRecordError

__all__ = ["Backend", "DamagedEntry", "Entry", "Key"]

#: A stored object's address: ``(namespace, name)``. asyncflow chooses the namespaces (plain
#: ASCII words); names can be any Unicode text, so a backend must encode them so that no name
#: can reach outside its namespace.
Key = tuple[str, str]


@dataclass(frozen=True)
class Entry:
    """A stored object as read: its bytes and an opaque version token.

    The version changes on every write. Pass it back as ``if_version`` to write only if
    nobody wrote in between (compare-and-swap).
    """

    data: bytes
    version: str


@dataclass(frozen=True)
class DamagedEntry(Entry):
    """What :meth:`Backend.claim_read` may give for a key whose stored object cannot be used
    (not held): the others are claimed and read all the same. ``data`` is empty."""

    error: DamagedRecordError


class Backend(abc.ABC):
    """Where a flow keeps its runs and shared state: a small key-value store with versions.

    Implement the abstract methods to keep asyncflow's data anywhere. Every method may be called
    from many tasks at once. Raise :class:`asyncflow.BackendError` (naming the location at fault)
    for failures and :class:`asyncflow.ConflictError` when a condition does not hold; never let
    a library's own exceptions escape. :mod:`asyncflow.testing` has a conformance suite that
    checks an implementation against this contract.
    """

    #: Whether claims are leases stored in the objects themselves (S3, DynamoDB): a write by
    #: anyone else ends the holder's claim, and :meth:`write_and_release` ends it in the same
    #: request. ``False`` (the default): claims are locks apart from the data, which no write
    #: ends. A backend that wraps another says what the wrapped one says.
    leased_claims: bool = False
    #: Whether :meth:`append` adds to a stored object without writing it whole (the file
    #: backend). ``False`` (the default): asyncflow never calls :meth:`append`, and writes each
    #: checkpoint whole. A backend that wraps another says what the wrapped one says.
    appends: bool = False
    #: Whether this backend keeps the active runs in packs (:class:`asyncflow.PackedBackend`).
    #: A backend that wraps another says what the wrapped one says.
    packs_runs: bool = False
    #: The largest object this store keeps, in bytes (DynamoDB: 400 KB an item), or ``None``
    #: (the default) for no limit that matters to asyncflow: :class:`asyncflow.PackedBackend`
    #: keeps its packs under it. A backend that wraps another says what the wrapped one says.
    item_limit: int | None = None

    @classmethod
    def from_url(cls, url: str) -> Backend:
        """Build the backend a URL names (``setup("s3://bucket/prefix")``, ``--backend``).

        The backends asyncflow ships each take their own scheme; the default refuses.

        Raises:
            ConfigError: the URL is not of this backend's form.
        """
        raise ConfigError(f"{cls.__name__} is not opened from a URL ({url!r})")

    def url(self) -> str | None:
        """The URL that opens this backend's store again (for ``--backend``, and to say which
        store a command read), or ``None`` if no URL does. The default is ``None``."""
        return None

    async def open(self) -> None:  # noqa: B027  (optional hook, empty on purpose)
        """Acquire connections or clients. Called once before use; the default does nothing."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook, empty on purpose)
        """Release what :meth:`open` acquired. The default does nothing."""

    @abc.abstractmethod
    async def read(self, key: Key) -> Entry | None:
        """Return the object stored at ``key``, or ``None`` if there is none."""

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        """Return :meth:`read` of each key, in order.

        Backends that can fetch in batches override this; the default reads concurrently.
        """
        results: list[Entry | None] = [None] * len(keys)
        limiter = anyio.CapacityLimiter(64)
        failures: list[AsyncflowError] = []

        async def one(i: int, key: Key) -> None:
            async with limiter:
                try:
                    results[i] = await self.read(key)
                except AsyncflowError as exc:  # raised as itself below, not in a group
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i, key in enumerate(keys):
                tg.start_soon(one, i, key)
        if failures:
            raise failures[0]
        return results

    @abc.abstractmethod
    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        """Store ``data`` at ``key`` atomically and return the new version.

        Args:
            key: where to store.
            data: the whole new content.
            if_version: write only if the current version is this one.
            if_absent: write only if nothing is stored at ``key`` (first writer wins).

        Raises:
            ConflictError: a condition did not hold; nothing was written.
        """

    async def append(self, key: Key, data: bytes, *, if_version: str) -> str:
        """Add ``data`` at the end of the object stored at ``key`` if its current version is
        ``if_version``, durably, and return the new version (which differs from every version
        the object had).

        Only called where :attr:`appends` is true. A reader sees the object as it was before
        or with ``data`` added, possibly with only part of ``data`` while the append is under
        way or if it was cut short by a crash: asyncflow appends lines, and leaves out a last
        line that has no end. A failed append should leave the object as it was.

        Raises:
            ConflictError: the stored version is not ``if_version`` (or nothing is stored);
                nothing was written.
        """
        raise NotImplementedError(f"{type(self).__name__} does not append")

    @abc.abstractmethod
    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        """Delete ``key``. Deleting what is not there is not an error, unless ``if_version``
        is given, in which case the current version must match (else :class:`ConflictError`).
        """

    @abc.abstractmethod
    async def list(self, namespace: str) -> dict[str, str]:
        """Return what is stored in ``namespace``: each name with its current version.

        The versions let a caller that claims an object later tell whether it changed since
        the listing (S3 lists ETags, a folder its files' stat).
        """

    @abc.abstractmethod
    def claim(self, key: Key) -> AbstractAsyncContextManager[bool]:
        """Try to take an exclusive hold on ``key`` without waiting.

        Used as ``async with backend.claim(key) as held:``. ``held`` is ``False`` when another
        holder (another task, process or machine) has it. A hold must not outlive its holder:
        if the process dies, the key becomes claimable again (at once, or once a lease
        expires).
        """

    @asynccontextmanager
    async def claim_read(
        self, keys: Sequence[Key], versions: Sequence[str]
    ) -> AsyncIterator[builtins.list[Entry | None]]:
        """Claim every key still at its listed version, and read it: one sweep for many keys.

        Used as ``async with backend.claim_read(keys, versions) as entries:``. ``entries[i]``
        is what is stored at ``keys[i]``, now held by the caller, or ``None`` where the key
        is held elsewhere, gone, or no longer at ``versions[i]``. A backend that claims and
        reads in one request gives a :class:`DamagedEntry` (not held) where the object
        cannot be used, instead of raising for all of them. The claims last until the
        block exits. The version in each entry is the one to write against: a backend whose
        claims are writes (leases) returns the version its claim made.

        The default claims each key with :meth:`claim`, then reads with :meth:`read_many`.
        Backends that can take a lease and read in one request override it.
        """
        async with AsyncExitStack() as stack:
            # Each claim is left on its own (not through the stack, which costs more per key
            # when there are thousands), so that the skipped ones are let go of at once.
            held: dict[int, AbstractAsyncContextManager[bool]] = {}

            async def let_go() -> None:
                while held:
                    await held.popitem()[1].__aexit__(None, None, None)

            stack.push_async_callback(let_go)
            for i, key in enumerate(keys):
                claim = self.claim(key)
                if await claim.__aenter__():
                    held[i] = claim
                else:
                    await claim.__aexit__(None, None, None)
            found: list[Entry | None] = [None] * len(keys)
            entries = await self.read_many([keys[i] for i in held])
            for (i, claim), entry in zip(list(held.items()), entries, strict=True):
                if entry is not None and entry.version == versions[i]:
                    found[i] = entry
                else:
                    del held[i]
                    await claim.__aexit__(None, None, None)
            yield found

    async def create_many(
        self, items: Sequence[tuple[Key, bytes]]
    ) -> builtins.list[str | ConflictError]:
        """Store each ``(key, data)`` create-only, as :meth:`write` with ``if_absent``: many
        at once (:meth:`asyncflow.Flow.start_many`).

        Returns, in order, each item's new version, or the :class:`ConflictError` saying that
        something is stored at its key already (that item was not written; the others were).
        Any other failure raises: then some items may be written and others not.

        Backends that can write in batches override this; the default writes concurrently,
        at most 64 at a time.
        """
        results: builtins.list[str | ConflictError] = [""] * len(items)
        limiter = anyio.CapacityLimiter(64)
        failures: builtins.list[AsyncflowError] = []

        async def one(i: int) -> None:
            key, data = items[i]
            async with limiter:
                try:
                    results[i] = await self.write(key, data, if_absent=True)
                except ConflictError as exc:
                    results[i] = exc
                except AsyncflowError as exc:  # raised as itself below, not in a group
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(items)):
                tg.start_soon(one, i)
        if failures:
            raise failures[0]
        return results

    async def write_and_release(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        """:meth:`write`, as the caller's last write under its claim on ``key``.

        A backend whose claims are leases stored with the object ends the lease in the same
        request, sparing a request when the claim is released; the caller must not write
        ``key`` again under this claim. The default is :meth:`write`.
        """
        return await self.write(key, data, if_version=if_version, if_absent=if_absent)

    def affinity(self, key: Key) -> int:
        """Which group of objects ``key`` is stored with: an invocation advances the runs of
        one group together, so that a backend keeping each group in one object
        (:class:`asyncflow.PackedBackend`) writes it once for all of them. The default is 0
        for every key (one group: runs are advanced oldest first)."""
        return 0

    def locate(self, key: Key) -> str:
        """Describe where ``key`` lives (a path or URL), for error messages."""
        return f"{key[0]}/{key[1]}"
