"""Packs: the small objects of a namespace kept together, a few hundred to an object.

On S3 and DynamoDB every request costs a few milliseconds of the client's CPU and a fraction of
a cent, so a store that keeps one object per run pays per run: advancing 100,000 runs took
300,000 requests. :class:`PackedBackend` keeps the objects of the namespaces it packs (the
active runs) in ``P`` pack objects of the backend it wraps instead, and writes each pack once
for all the changes its callers make while the previous write of that pack is under way
(group commit). An invocation that advances the runs of one pack together (the store orders
due runs by :meth:`Backend.affinity`) then costs a handful of requests per pack, whatever the
number of runs in it.

The layout, in the wrapped backend:

- ``packs/meta``: ``{"asyncflow": "packs", "count": P}``, written create-only by the first
  process that opens the store; later ones take ``P`` from it, so that every process puts a
  run in the same pack.
- ``packs/<namespace>.<p>``: the pack ``p < P`` of a packed namespace. An object's name
  chooses its pack (CRC-32 of its UTF-8 bytes modulo ``P``, as :mod:`asyncflow._shard`
  chooses a shard: shard ``k`` of ``n``, for ``n`` dividing ``P``, owns whole packs). A pack
  is one header line (``asyncflow-pack/1`` and a JSON table: each member's name, version,
  lease and length) followed by the members' bytes.
- ``spilled/<name>.<nonce>``: a member larger than ``spill_bytes`` (a run with a long
  journal), or one moved out to keep its pack under ``pack_bytes``: its bytes live in an
  object of their own, and its pack keeps the rest of it (version, lease, the object's name).
  A write of such a member writes a new object and switches the pack to it, so the pack stays
  the one place that decides.

Every member has a version of its own (new on every write of that member), so callers see
what they see of any backend: compare-and-swap per object, and claims that are leases
stored with the object (a write by anyone else ends them). A pack is written with the
wrapped backend's compare-and-swap; a write that loses a race reads the pack again and
applies its changes again, each still under its own condition.

Objects that the wrapped backend stores in a packed namespace itself (a store written before
packs, or by an older asyncflow during a rolling deploy) stay where they are: each listing
lists them too, and every operation on one of them goes to the wrapped backend.
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import os
import secrets
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._backend import Backend, DamagedEntry, Entry, Key
from .._exceptions import (
    AsyncflowError,
    BackendError,
    ConfigError,
    ConflictError,
    DamagedRecordError,
    UsageError,
)
from .._validate import positive_int
from .._validate import seconds as checked_seconds

__all__ = ["DEFAULT_LEASE_SECONDS", "PackedBackend", "pack_of"]

logger = logging.getLogger("asyncflow")

PACKS = "packs"  # the wrapped backend's namespace of the packs and their meta
SPILLED = "spilled"  # the wrapped backend's namespace of members kept apart
_META = "meta"
_MAGIC = b"asyncflow-pack/1 "
#: How long a claim lasts without a write by its holder (as the S3 and DynamoDB backends).
DEFAULT_LEASE_SECONDS = 900.0
# A pack's size where the wrapped store has no limit: a write costs about as much CPU and time
# at 1 MiB as at 1 KiB (S3 through botocore: 6.8 against 4.9 ms), and a pack that fits its
# runs moves none out (each moved out is requests of its own, every write).
DEFAULT_PACK_BYTES = 1024 * 1024
# How long a pack's write waits for one more of its runs' changes (PackedBackend._gather).
_QUIET = 0.02
# Attempts of one group of changes against a pack that others keep writing meanwhile.
_ATTEMPTS = 100
# Packs read or written at once by one sweep (a listing, claim_read, read_many).
_SWEEP = 32


def pack_of(name: str, count: int) -> int:
    """The pack (``0 <= p < count``) that the object named ``name`` is kept in."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % count


@dataclass(frozen=True, slots=True)
class _Member:
    """One object as its pack stores it."""

    version: str
    data: bytes | None  # None: a placeholder (claimed, not created yet) or spilled
    owner: str | None = None  # the lease: who holds it, until when
    until: float | None = None
    spill: str | None = None  # where the bytes of a spilled member are
    placeholder: bool = False


@dataclass(slots=True)
class _Held:
    """This backend's claim on one object: the version it last wrote or took there."""

    version: str | None
    placeholder: bool = False
    released: bool = False


_PENDING: Any = object()


@dataclass(slots=True)
class _Op:
    """One change to one member, applied when its pack is next written."""

    key: Key
    kind: str  # "put", "delete", "take", "take_new", "release"
    data: bytes | None = None
    if_version: str | None = None
    if_absent: bool = False
    lease: bool = False  # put: the holder's write, which keeps (renews) its lease
    ends_hold: bool = False  # the holder's last op on the member (its claim ends with it)
    spill: str | None = None  # put: the member's bytes were written apart, there
    # What the op comes to in the attempt under way, and once its pack's write is done (an
    # attempt that loses a race is made again: its outcomes are not results).
    outcome: Any = None
    result: Any = _PENDING
    before: _Member | None = None  # what a put or delete replaced


@dataclass(slots=True)
class _Pack:
    """What this process knows of one pack: the members and version last read or written
    (``None``: to be read), and the changes waiting for its next write."""

    key: Key
    version: str | None = None
    members: dict[str, _Member] | None = None
    queue: list[_Op] = field(default_factory=list)
    writing: bool = False
    written: anyio.Event | None = None  # set when the write under way ends
    # For the write to wait for this process's runs in the pack (_gather): the members it
    # holds, those with an op in the queue, those that kept a write waiting in vain (until
    # their next op), and while a write waits, how many it still waits for and its signal.
    holds: set[str] = field(default_factory=set)
    queued: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)
    missing: int = 0
    all_in: anyio.Event | None = None


class PackedBackend(Backend):
    """Keeps the objects of ``namespaces`` (by default the active runs) in ``packs`` pack
    objects of ``inner``, so that many runs share each request (see the module's notes).

    Use it around the S3 or DynamoDB backend for stores that advance thousands of runs per
    invocation: ``setup("s3://bucket/prefix?packs=256")``, or
    ``PackedBackend(S3Backend("bucket", "prefix"), packs=256)``. ``inner`` needs only reads,
    writes with conditions, deletes and listings; its own claims are used only for the
    objects it stored before it was wrapped.

    Args:
        inner: the backend that stores the packs (and everything not packed).
        packs: the number of packs ``P``, a power of two, used when the store has none yet;
            a store keeps the number it was made with. More packs: fewer runs rewritten per
            pack write, more requests per invocation. Shard ``k`` of ``n`` (``n`` dividing
            ``P``) owns whole packs.
        namespaces: the namespaces packed.
        spill_bytes: a member larger than this is kept in an object of its own.
        pack_bytes: members are moved out (largest first) to keep a pack under this size
            (default: 1 MiB; where the wrapped store limits an object's size, as DynamoDB's
            400 KB items do, that limit less 32 KiB). A write costs about as much CPU and
            time whatever its size, while each member moved out costs requests of its own.
        lease_seconds: how long a claim lasts without a write by its holder (default: the
            wrapped backend's ``lease_seconds`` if it has one, else 900, Lambda's longest run).
        gather_seconds: how long a pack's write may wait at most for the other runs of the
            pack that this process is advancing to reach their next write, so that one
            write carries them all (0: never wait). It waits only while their changes keep
            coming (one at least every 20 ms), and not again for runs that brought none.
        clock: the time used for leases (default :func:`time.time`).
    """

    leased_claims = True

    @property
    def packs_runs(self) -> bool:  # type: ignore[override]
        return "active" in self.namespaces

    def __init__(
        self,
        inner: Backend,
        *,
        packs: int = 256,
        namespaces: Iterable[str] = ("active",),
        spill_bytes: int = 16 * 1024,
        pack_bytes: int | None = None,
        lease_seconds: float | None = None,
        gather_seconds: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(inner, Backend):
            raise ConfigError(f"PackedBackend wraps an asyncflow.Backend, not {inner!r}")
        if positive_int(packs, "packs", error=ConfigError) & (packs - 1):
            raise ConfigError(f"packs must be a power of two (256, 1024), not {packs}")
        self.inner = inner
        self.count = packs  # the store's own, once open
        self.namespaces = frozenset(namespaces)
        self.spill_bytes = positive_int(spill_bytes, "spill_bytes", error=ConfigError)
        if pack_bytes is None:
            limit = inner.item_limit
            pack_bytes = DEFAULT_PACK_BYTES if limit is None else limit - 32 * 1024
        self.pack_bytes = positive_int(pack_bytes, "pack_bytes", error=ConfigError)
        self.item_limit = inner.item_limit
        if lease_seconds is None:
            lease_seconds = getattr(inner, "lease_seconds", DEFAULT_LEASE_SECONDS)
        self.lease_seconds = checked_seconds(lease_seconds, "lease_seconds", error=ConfigError)
        self.gather_seconds = checked_seconds(
            gather_seconds, "gather_seconds", error=ConfigError, zero=True
        )
        self.clock = clock or time.time
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._packs: dict[Key, _Pack] = {}
        self._held: dict[Key, _Held] = {}
        self._loose: dict[str, set[str]] = {}  # per namespace: objects stored unpacked
        self._opened = False
        self._prefix, self._count = secrets.token_hex(6), itertools.count()

    def __repr__(self) -> str:
        return f"PackedBackend({self.inner!r}, packs={self.count})"

    def url(self) -> str | None:
        url = self.inner.url()
        return None if url is None else f"{url}?packs={self.count}"

    # -- opening -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open ``inner``, then learn the store's number of packs (or record ours)."""
        await self.inner.open()
        try:
            await self._learn()
        except BaseException:
            await self.inner.aclose()
            raise
        self._opened = True

    async def _learn(self) -> None:
        meta = (PACKS, _META)
        while True:
            entry = await self.inner.read(meta)
            if entry is not None:
                self.count = self._read_meta(entry.data)
                break
            body = json.dumps({"asyncflow": "packs", "count": self.count}).encode()
            try:
                await self.inner.write(meta, body, if_absent=True)
                break
            except ConflictError:
                continue  # another process recorded it first: read theirs (it stays)
        # The objects stored unpacked (before packs): every operation on one goes to them,
        # from the first (a run read by id before any listing) on.
        for namespace in self.namespaces:
            self._loose[namespace] = set(await self.inner.list(namespace))

    def _read_meta(self, data: bytes) -> int:
        try:
            meta = json.loads(data)
            count = meta["count"]
            if meta["asyncflow"] != "packs" or not isinstance(count, int) or count < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            where = self.inner.locate((PACKS, _META))
            raise DamagedRecordError(
                f"{where} is not asyncflow's record of the store's packs; restore it from a"
                " backup (it says how many packs the store has)",
                location=where,
            ) from None
        if count != self.count:
            logger.info("%s has %d packs (not %d): using the store's", self, count, self.count)
        return count

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- where an object is --------------------------------------------------------------------

    def _packed(self, key: Key) -> bool:
        if key[0] not in self.namespaces:
            return False
        if not self._opened:
            raise UsageError(f"{self!r} is used before open()")
        return key[1] not in self._loose.get(key[0], ())

    def _pack_key(self, key: Key) -> Key:
        return (PACKS, f"{key[0]}.{pack_of(key[1], self.count)}")

    def _pack(self, key: Key) -> _Pack:
        where = self._pack_key(key)
        pack = self._packs.get(where)
        if pack is None:
            pack = self._packs[where] = _Pack(where)
        return pack

    def affinity(self, key: Key) -> int:
        if key[0] in self.namespaces and self._opened:
            return pack_of(key[1], self.count)
        return 0

    def locate(self, key: Key) -> str:
        if key[0] in self.namespaces and self._opened and self._packed(key):
            return f"{self.inner.locate(self._pack_key(key))}#{key[1]}"
        return self.inner.locate(key)

    # -- the stored form -----------------------------------------------------------------------

    def _decode(self, pack: Key, body: bytes) -> dict[str, _Member]:
        end = body.find(b"\n")
        try:
            if not body.startswith(_MAGIC) or end < 0:
                raise ValueError("no pack header")
            table = json.loads(body[len(_MAGIC) : end])
            if not isinstance(table, list):
                raise ValueError("its header is not a table")
            members: dict[str, _Member] = {}
            at = end + 1
            for name, version, owner, until, kind, length in table:
                if not isinstance(owner, str | None) or not (
                    until is None or (isinstance(until, int | float) and until == until)
                ):
                    raise ValueError(f"the lease of {name!r} is not one asyncflow writes")
                if kind == "d" and not (isinstance(length, int) and length >= 0):
                    raise ValueError(f"the length of {name!r} is not a length")
                if kind == "d":
                    data: bytes | None = body[at : at + length]
                    at += length
                    members[name] = _Member(version, data, owner, until)
                elif kind == "s":
                    members[name] = _Member(version, None, owner, until, spill=str(length))
                elif kind == "p":
                    members[name] = _Member(version, None, owner, until, placeholder=True)
                else:
                    raise ValueError(f"member kind {kind!r}")
                if not isinstance(name, str) or not isinstance(version, str):
                    raise ValueError("member name or version not text")
            if at != len(body):
                raise ValueError("members' lengths do not add up")
        except (ValueError, TypeError, RecursionError) as exc:
            where = self.inner.locate(pack)
            raise DamagedRecordError(
                f"{where} is not a pack asyncflow wrote ({exc}); asyncflow leaves it untouched:"
                " the runs kept in it cannot be read or written until it is restored from a"
                " backup",
                location=where,
            ) from None
        return members

    @staticmethod
    def _encode(members: dict[str, _Member]) -> bytes:
        table: list[list[Any]] = []
        parts: list[bytes] = []
        for name, m in members.items():
            if m.placeholder:
                table.append([name, m.version, m.owner, m.until, "p", 0])
            elif m.spill is not None:
                table.append([name, m.version, m.owner, m.until, "s", m.spill])
            else:
                assert m.data is not None
                table.append([name, m.version, m.owner, m.until, "d", len(m.data)])
                parts.append(m.data)
        head = json.dumps(table, ensure_ascii=False, separators=(",", ":")).encode()
        return b"".join((_MAGIC, head, b"\n", *parts))

    async def _load(self, pack: _Pack) -> dict[str, _Member]:
        """Read the pack as stored now (its members, and version to write against)."""
        entry = await self.inner.read(pack.key)
        return self._loaded(pack, entry)

    def _loaded(self, pack: _Pack, entry: Entry | None) -> dict[str, _Member]:
        if entry is None:
            pack.version, pack.members = None, {}
        else:
            pack.members = self._decode(pack.key, entry.data)
            pack.version = entry.version
        return pack.members

    async def _spilled(self, m: _Member) -> bytes | None:
        """The bytes of a spilled member (``None``: replaced meanwhile, read the pack again)."""
        assert m.spill is not None
        entry = await self.inner.read((SPILLED, m.spill))
        return None if entry is None else entry.data

    # -- group commit --------------------------------------------------------------------------

    async def _commit(self, pack: _Pack, ops: Sequence[_Op]) -> None:
        """Apply ``ops`` in the next write of ``pack``; each op's ``result`` is set."""
        pack.queue.extend(ops)
        for op in ops:
            self._arrived(pack, op)
        # Shielded: a caller cancelled mid-write must still learn the version written (and
        # a write under way serves other callers too).
        with anyio.CancelScope(shield=True):
            while any(op.result is _PENDING for op in ops):
                if pack.writing:
                    assert pack.written is not None
                    await pack.written.wait()
                    continue
                pack.writing, pack.written = True, anyio.Event()
                try:
                    # Let the callers already running reach their own changes first: they
                    # join this write instead of waiting for the next one.
                    await anyio.lowlevel.checkpoint()
                    await self._gather(pack)
                    batch, pack.queue, pack.queued = pack.queue, [], set()
                    await self._write_pack(pack, batch)
                finally:
                    pack.writing = False
                    pack.written.set()

    def _arrived(self, pack: _Pack, op: _Op) -> None:
        """Note ``op``'s member as waiting for the pack's next write (see :meth:`_gather`)."""
        name = op.key[1]
        if name in pack.holds and name not in pack.queued:
            pack.queued.add(name)
            if name in pack.slow:
                pack.slow.discard(name)  # (not counted as missing)
            elif pack.missing:
                pack.missing -= 1
                if pack.all_in is not None:
                    pack.all_in.set()
        if op.ends_hold:
            pack.holds.discard(name)
            pack.slow.discard(name)

    async def _gather(self, pack: _Pack) -> None:
        """Before a write that carries a change of a run this process holds: wait while the
        other runs of the pack that it holds keep bringing theirs, so that one write carries
        them all. The wait ends when each has a change waiting, when none came for
        ``_QUIET`` seconds, or after ``gather_seconds``.

        The runs of a pack are claimed together and advanced side by side, and each reaches
        its write (a checkpoint, or its last write, which ends its claim) a little after the
        others: without waiting, the first write of the pack carries the first few and the
        rest need two or three more. Each write costs a request, its CPU, and the whole
        pack's bytes. Runs that bring nothing (a long side effect, a wait) are not waited for
        again until their next change: they delay at most one write.
        """
        if self.gather_seconds <= 0 or not pack.holds or not pack.queued:
            return  # (nothing queued by a held run: claims, creations)
        pack.missing = len(pack.holds - pack.queued - pack.slow)
        deadline = anyio.current_time() + self.gather_seconds
        came = False
        try:
            while pack.missing:
                left = deadline - anyio.current_time()
                if left <= 0:
                    break
                pack.all_in = anyio.Event()  # set by the next change that arrives
                with anyio.move_on_after(min(_QUIET, left)) as quiet:
                    await pack.all_in.wait()
                if quiet.cancelled_caught:
                    break
                came = True
            if pack.missing and (not came or anyio.current_time() >= deadline):
                pack.slow |= pack.holds - pack.queued  # busy elsewhere: not waited for again
        finally:
            pack.missing, pack.all_in = 0, None

    async def _write_pack(self, pack: _Pack, batch: list[_Op]) -> None:
        spilled: list[str] = []  # moved out by the attempt under way
        stale: list[str] = []  # moved out by attempts that lost a race: referred to by none
        try:
            for _ in range(_ATTEMPTS):
                members, base, fresh = pack.members, pack.version, pack.members is None
                if members is None:
                    members, base = await self._load(pack), pack.version
                members = dict(members)
                now = self.clock()
                changed = [op for op in batch if self._apply(op, members, now)]
                if not changed:
                    if not fresh:
                        # Judged by what this process last saw: what is stored may say
                        # otherwise (a write's compare-and-swap checks that, not a no-op).
                        pack.members = None
                        continue
                    for op in batch:
                        op.result = op.outcome
                    return
                body = self._encode(members)
                if len(body) > self.pack_bytes:
                    body = await self._make_room(pack, members, spilled)
                try:
                    pack.version = await self.inner.write(
                        pack.key, body, if_version=base, if_absent=base is None
                    )
                except ConflictError:
                    pack.members = None  # written by someone else: read it, apply again
                    stale += spilled  # (certainly not written: nothing refers to them)
                    spilled.clear()
                    continue
                pack.members = members
                spilled.clear()  # (referred to by the pack now)
                for op in batch:
                    op.result = op.outcome
                return
            raise BackendError(
                f"{self.inner.locate(pack.key)} kept changing under {_ATTEMPTS} attempts to"
                " write it",
                location=self.inner.locate(pack.key),
            )
        except BaseException as exc:
            for op in batch:  # (none is left waiting, whatever went wrong)
                op.result = exc
            if not isinstance(exc, AsyncflowError):
                raise
        finally:
            # Moved out for pack writes that certainly did not happen. (Those of a write that
            # failed otherwise are left: it may have happened, and they are its runs' bytes.)
            for where in stale:
                await self._forget(where)

    async def _make_room(
        self, pack: _Pack, members: dict[str, _Member], spilled: list[str]
    ) -> bytes:
        """Move members out of the pack, largest first, until it fits ``pack_bytes``."""
        inline = sorted((len(m.data), name) for name, m in members.items() if m.data is not None)
        while True:
            body = self._encode(members)
            excess = len(body) - self.pack_bytes
            if excess <= 0 or not inline:
                return body
            # As many as the excess asks for, counted without encoding the pack again per
            # member (a pack of hundreds was encoded once per member moved: quadratic). A
            # member moved out leaves its bytes and grows its table entry by its spill name.
            while excess > 0 and inline:
                length, name = inline.pop()
                m = members[name]
                assert m.data is not None
                where = await self._spill(name, m.data)
                spilled.append(where)
                members[name] = _Member(m.version, None, m.owner, m.until, spill=where)
                excess -= length - (len(where) + 2 - len(str(length)))  # (quoted name)

    async def _spill(self, name: str, data: bytes) -> str:
        where = f"{name}.{secrets.token_hex(8)}"
        await self.inner.write((SPILLED, where), data, if_absent=True)
        return where

    async def _forget(self, where: str) -> None:
        """Delete a spilled member's object no pack refers to (left behind if this fails)."""
        try:
            with anyio.CancelScope(shield=True):
                await self.inner.delete((SPILLED, where))
        except AsyncflowError as exc:
            logger.debug("could not delete %s: %s", self.inner.locate((SPILLED, where)), exc)

    def _apply(self, op: _Op, members: dict[str, _Member], now: float) -> bool:
        """Apply ``op`` to ``members`` (a copy of the pack's) if its condition holds; set its
        result; return whether it changed anything."""
        name = op.key[1]
        m = members.get(name)
        if m is not None and m.placeholder and not (m.owner == self.owner or self._live(m, now)):
            del members[name]  # a dead claim's placeholder: as if absent
            m = None
        op.before = m
        if op.kind == "put":
            if op.if_absent and m is not None and not (m.placeholder and m.owner == self.owner):
                op.outcome = self._conflict(op.key, "already exists")
                return False
            if op.if_version is not None and (m is None or m.version != op.if_version):
                op.outcome = self._changed(op.key, op.if_version, m)
                return False
            version = self._new_version()
            owner, until = (self.owner, now + self.lease_seconds) if op.lease else (None, None)
            members[name] = _Member(version, op.data, owner, until, spill=op.spill)
            op.outcome = version
            return True
        if op.kind == "delete":
            if op.if_version is not None and (
                m is None or m.placeholder or m.version != op.if_version
            ):
                op.outcome = self._changed(op.key, op.if_version, m)
                return False
            op.outcome = m
            if m is None:
                return False
            del members[name]
            return True
        if op.kind == "take":  # claim_read: at the version listed, if nobody holds it
            if m is None or m.placeholder or m.version != op.if_version or self._live(m, now):
                op.outcome = None
                return False
            version = self._new_version()
            members[name] = _Member(
                version, m.data, self.owner, now + self.lease_seconds, spill=m.spill
            )
            op.outcome = members[name]
            return True
        if op.kind == "take_new":  # claim: nothing there (a placeholder holds it), or free
            if m is not None and self._live(m, now):
                op.outcome = None
                return False
            version = self._new_version()
            until = now + self.lease_seconds
            if m is None:
                members[name] = _Member(version, None, self.owner, until, placeholder=True)
            else:
                members[name] = _Member(version, m.data, self.owner, until, spill=m.spill)
            op.outcome = members[name]
            return True
        assert op.kind == "release"  # only if nobody wrote since our last write or take
        op.outcome = None
        if m is None or m.version != op.if_version or m.owner != self.owner:
            return False
        if m.placeholder:
            del members[name]
        else:
            members[name] = _Member(m.version, m.data, spill=m.spill)
        return True

    def _new_version(self) -> str:
        """A member version no process made before: this object's random prefix and a count
        (cheaper than a random token per write, which costs a system call)."""
        return f"{self._prefix}{next(self._count):x}"

    def _live(self, m: _Member, now: float) -> bool:
        """Whether someone (this backend too) holds a lease on ``m`` now."""
        return m.owner is not None and m.until is not None and m.until > now

    def _conflict(self, key: Key, what: str) -> ConflictError:
        return ConflictError(f"{self.locate(key)} {what}", location=self.locate(key))

    def _changed(self, key: Key, expected: str, m: _Member | None) -> ConflictError:
        found = "nothing" if m is None or m.placeholder else f"version {m.version}"
        return ConflictError(
            f"{self.locate(key)} changed: expected version {expected}, found {found}",
            location=self.locate(key),
        )

    async def _one(self, key: Key, op: _Op) -> Any:
        await self._commit(self._pack(key), [op])
        if isinstance(op.result, BaseException):
            raise op.result
        return op.result

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        if not self._packed(key):
            return await self.inner.read(key)
        return (await self.read_many([key]))[0]

    async def read_many(self, keys: Sequence[Key]) -> builtins.list[Entry | None]:
        found: list[Entry | None] = [None] * len(keys)
        packed: dict[Key, list[int]] = {}
        loose: list[int] = []
        for i, key in enumerate(keys):
            if self._packed(key):
                packed.setdefault(self._pack_key(key), []).append(i)
            else:
                loose.append(i)
        if loose:
            entries = await self.inner.read_many([keys[i] for i in loose])
            for i, entry in zip(loose, entries, strict=True):
                found[i] = entry
        for _ in range(_ATTEMPTS):
            await self._read_packs(keys, packed, found)
            if not packed:
                return found
        raise BackendError(f"packs kept changing while {self!r} read them")

    async def _read_packs(
        self, keys: Sequence[Key], packed: dict[Key, list[int]], found: list[Entry | None]
    ) -> None:
        """Read the packs of ``packed`` (pack -> indices of keys) into ``found``; leave in
        ``packed`` those to read again (a spilled member replaced meanwhile)."""
        order = list(packed)
        entries = await self.inner.read_many(order)
        again: dict[Key, list[int]] = {}
        for where, entry in zip(order, entries, strict=True):
            members = self._loaded(self._packs.setdefault(where, _Pack(where)), entry)
            for i in packed[where]:
                m = members.get(keys[i][1])
                if m is None or m.placeholder:
                    continue
                data = m.data if m.spill is None else await self._spilled(m)
                if data is None:
                    again.setdefault(where, []).append(i)
                else:
                    found[i] = Entry(data, m.version)
        packed.clear()
        packed.update(again)

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        return await self._write(key, data, if_version, if_absent, release=False)

    async def write_and_release(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        return await self._write(key, data, if_version, if_absent, release=True)

    async def _write(
        self, key: Key, data: bytes, if_version: str | None, if_absent: bool, release: bool
    ) -> str:
        if not self._packed(key):
            write = self.inner.write_and_release if release else self.inner.write
            return await write(key, data, if_version=if_version, if_absent=if_absent)
        held = self._held.get(key)
        holding = held is not None and not held.released
        op = _Op(
            key,
            "put",
            data,
            if_version,
            if_absent,
            lease=holding and not release,
            ends_hold=holding and release,
        )
        if len(data) > self.spill_bytes:
            op.spill, op.data = await self._spill(key[1], data), None
        try:
            version: str = await self._one(key, op)
        except ConflictError:
            if op.spill is not None:  # (not written: left where it may have been)
                await self._forget(op.spill)
            raise
        if op.before is not None and op.before.spill is not None:
            await self._forget(op.before.spill)
        if held is not None and holding:
            held.version, held.placeholder, held.released = version, False, release
        return version

    async def create_many(
        self, items: Sequence[tuple[Key, bytes]]
    ) -> builtins.list[str | ConflictError]:
        results: list[str | ConflictError] = [""] * len(items)
        loose = [i for i, (key, _) in enumerate(items) if not self._packed(key)]
        if loose:
            made = await self.inner.create_many([items[i] for i in loose])
            for i, result in zip(loose, made, strict=True):
                results[i] = result
        by_pack: dict[Key, list[tuple[int, _Op]]] = {}
        unpacked = set(loose)
        for i, (key, data) in enumerate(items):
            if i not in unpacked:
                op = _Op(key, "put", data, if_absent=True)
                if len(data) > self.spill_bytes:
                    op.spill, op.data = await self._spill(key[1], data), None
                by_pack.setdefault(self._pack_key(key), []).append((i, op))

        async def commit(where: Key) -> None:
            await self._commit(
                self._packs.setdefault(where, _Pack(where)), [o for _, o in by_pack[where]]
            )

        await self._sweep(commit, by_pack)
        failure: AsyncflowError | None = None
        for taking in by_pack.values():
            for i, op in taking:
                if isinstance(op.result, str | ConflictError):
                    results[i] = op.result
                elif isinstance(op.result, AsyncflowError):
                    failure = failure or op.result
                if op.spill is not None and isinstance(op.result, ConflictError):
                    await self._forget(op.spill)
        if failure is not None:
            raise failure
        return results

    async def _sweep(self, call: Callable[[Key], Any], packs: Iterable[Key]) -> None:
        """``await call(pack)`` for each of ``packs``, ``_SWEEP`` at a time; the first
        asyncflow error is raised as itself once all are done."""
        limiter = anyio.CapacityLimiter(_SWEEP)
        failures: builtins.list[AsyncflowError] = []

        async def one(where: Key) -> None:
            async with limiter:
                try:
                    await call(where)
                except AsyncflowError as exc:
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for where in packs:
                tg.start_soon(one, where)
        if failures:
            raise failures[0]

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        if not self._packed(key):
            await self.inner.delete(key, if_version=if_version)
            return
        held = self._held.get(key)
        op = _Op(key, "delete", if_version=if_version, ends_hold=held is not None)
        gone: _Member | None = await self._one(key, op)
        if gone is not None and gone.spill is not None:
            await self._forget(gone.spill)
        if held is not None:
            held.released = True

    async def list(self, namespace: str) -> dict[str, str]:
        if namespace not in self.namespaces or not self._opened:
            return await self.inner.list(namespace)
        keys = [(PACKS, f"{namespace}.{p}") for p in range(self.count)]
        found: dict[str, str] = {}
        for start in range(0, len(keys), _SWEEP * 8):
            part = keys[start : start + _SWEEP * 8]
            for where, entry in zip(part, await self.inner.read_many(part), strict=True):
                try:
                    members = self._loaded(self._packs.setdefault(where, _Pack(where)), entry)
                except DamagedRecordError as exc:
                    # Its runs are not listed (nothing reads or writes them) until it is
                    # restored; the others go on.
                    logger.error("%s", exc)
                    continue
                for name, m in members.items():
                    if not m.placeholder:
                        found[name] = m.version
        loose = await self.inner.list(namespace)
        self._loose[namespace] = set(loose)
        found.update(loose)
        return found

    # -- claims --------------------------------------------------------------------------------

    @asynccontextmanager
    async def claim(self, key: Key) -> AsyncIterator[bool]:
        if not self._packed(key):
            async with self.inner.claim(key) as held:
                yield held
            return
        if key in self._held:
            yield False
            return
        self._held[key] = _Held(None, released=True)  # reserved against our other tasks
        try:
            taken: _Member | None = await self._one(key, _Op(key, "take_new"))
        except BaseException:
            self._held.pop(key, None)
            raise
        if taken is None:
            self._held.pop(key, None)
            yield False
            return
        self._held[key] = _Held(taken.version, placeholder=taken.placeholder)
        self._pack(key).holds.add(key[1])
        try:
            yield True
        finally:
            await self._release([key])

    @asynccontextmanager
    async def claim_read(
        self, keys: Sequence[Key], versions: Sequence[str]
    ) -> AsyncIterator[builtins.list[Entry | None]]:
        found: list[Entry | None] = [None] * len(keys)
        loose = [i for i, key in enumerate(keys) if not self._packed(key)]
        unpacked = set(loose)
        mine: list[Key] = []
        by_pack: dict[Key, list[tuple[int, _Op]]] = {}
        for i, key in enumerate(keys):
            if i in unpacked or key in self._held:
                continue
            self._held[key] = _Held(None, released=True)  # reserved against our other tasks
            mine.append(key)
            op = _Op(key, "take", if_version=versions[i])
            by_pack.setdefault(self._pack_key(key), []).append((i, op))
        try:
            async with self.inner.claim_read(
                [keys[i] for i in loose], [versions[i] for i in loose]
            ) as entries:
                for i, entry in zip(loose, entries, strict=True):
                    found[i] = entry
                await self._take_all(keys, by_pack, found)
                yield found
        finally:
            await self._release(mine)

    async def _take_all(
        self,
        keys: Sequence[Key],
        by_pack: dict[Key, builtins.list[tuple[int, _Op]]],
        found: builtins.list[Entry | None],
    ) -> None:
        async def one(where: Key) -> None:
            taking = by_pack[where]
            pack = self._packs.setdefault(where, _Pack(where))
            await self._commit(pack, [op for _, op in taking])
            for i, op in taking:
                key = keys[i]
                if not isinstance(op.result, _Member):
                    self._held.pop(key, None)  # not taken: not reserved any more
                if isinstance(op.result, DamagedRecordError):
                    found[i] = DamagedEntry(b"", "", op.result)
                    continue
                if isinstance(op.result, BaseException):
                    raise op.result
                m: _Member | None = op.result
                if m is None:
                    continue
                self._held[key] = _Held(m.version)
                pack.holds.add(key[1])
                data = m.data if m.spill is None else await self._spilled(m)
                if data is None:  # (the pack names it: deleted only once replaced)
                    raise BackendError(
                        f"{self.locate(key)}'s bytes are missing", location=self.locate(key)
                    )
                found[i] = Entry(data, m.version)

        await self._sweep(one, by_pack)

    async def _release(self, keys: Sequence[Key]) -> None:
        """End this backend's leases on ``keys`` (each only if nobody wrote it since), one
        write per pack; best effort: a lease not ended expires on its own."""
        by_pack: dict[Key, builtins.list[_Op]] = {}
        for key in keys:
            held = self._held.pop(key, None)
            if held is None or held.released or held.version is None:
                continue
            op = _Op(key, "release", if_version=held.version, ends_hold=True)
            by_pack.setdefault(self._pack_key(key), []).append(op)
        if not by_pack:
            return

        async def one(where: Key) -> None:
            await self._commit(self._packs.setdefault(where, _Pack(where)), by_pack[where])

        with anyio.CancelScope(shield=True):
            await self._sweep(one, by_pack)
