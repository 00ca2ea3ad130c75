"""The local-folder backend, asyncflow's default (``file:<folder>``)."""

from __future__ import annotations

import builtins
import errno
import functools
import logging
import os
import stat
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

import anyio

from .._backend import Backend, Entry, Key
from .._exceptions import BackendError, ConfigError, ConflictError, DamagedRecordError
from .._validate import positive_int
from ._threads import GroupRunner, ThreadBatcher

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileBackend"]

logger = logging.getLogger("asyncflow")

# Characters never written raw into a file name: path separators and characters other
# systems reject, plus ASCII capitals, so that two names differing only in case stay two files
# on case-insensitive file systems (macOS, Windows shares). Non-ASCII characters are written
# raw unless case or Unicode normalization could make them equal to others (see _raw_ok).
_UNSAFE = frozenset('/\\%:*?"<>|') | frozenset(map(chr, range(0x20))) | {"\x7f"}
_UNSAFE |= frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_NAME_BYTES = 200  # file systems cap a name at 255 bytes; leave room for suffixes
_LONG = "%%"  # the start of a long name's file name: "%%" and its SHA-256 (never encoded else)
_SUFFIX = ".json"
_LOCK_FOLDER = ".locks"
_CLAIM_SPACE = 1 << 56  # a claim locks one byte at a hash of the key, below this offset
_STRIPES = 64  # conditional writes lock one of these bytes of another file
_PLACES_KEPT = 250_000  # files of keys kept by _where (about 100 MB at most)
_CREATE_CHUNK = 1024  # items of create_many written per worker-thread job (one syncfs)


def encode_name(name: str) -> str:
    """Turn any Unicode name into one safe file name, reversibly (see :func:`decode_name`).

    Names longer than 200 bytes so encoded are not given here: see :func:`file_stem`.
    """
    if not name:
        return "%"  # a lone "%" is never produced otherwise
    if name.isascii():
        parts = [_escaped(ch) if ch in _UNSAFE else ch for ch in name]
    else:
        parts = [
            _escaped(ch) if ch in _UNSAFE or not (ch.isascii() or _raw_ok(ch)) else ch
            for ch in name
        ]
    if parts[0] == ".":  # never ".", "..", or a hidden file
        parts[0] = "%2E"
    return "".join(parts)


def _escaped(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode())


@functools.lru_cache(maxsize=4096)
def _raw_ok(ch: str) -> bool:
    """Whether a non-ASCII character can be written raw: no other character (or sequence)
    is the same to a file system that ignores case (É/é, Σ/σ/ς, the Kelvin sign and k) or
    Unicode normalization (é as one character or as e and an accent)."""
    import unicodedata

    return (
        ch.lower() == ch == ch.upper()
        and ch.casefold() == ch
        and not unicodedata.combining(ch)
        and unicodedata.normalize("NFD", ch) == ch
        and unicodedata.normalize("NFC", ch) == ch
    )


def _legacy_name(name: str) -> str:
    """The file name asyncflow gave ``name`` before non-ASCII characters were escaped (when
    only ASCII capitals were): still read, so that stores written then keep working."""
    if not name:
        return "%"
    parts = [_escaped(ch) if ch in _UNSAFE else ch for ch in name]
    if parts[0] == ".":
        parts[0] = "%2E"
    return "".join(parts)


def file_stem(name: str) -> tuple[str, bytes | None]:
    """The file name (without suffix) of ``name``, and for a long name the header its file
    starts with.

    A name whose encoding is longer than 200 bytes is stored as ``%%<SHA-256 of the name>``,
    the file starting with one line ``asyncflow-name <the name as JSON>`` that holds it
    (listing reads that line back).
    """
    encoded = encode_name(name)
    if len(encoded.encode()) <= _MAX_NAME_BYTES:
        return encoded, None
    import hashlib
    import json

    header = f"asyncflow-name {json.dumps(name, ensure_ascii=False)}\n".encode()
    return _LONG + hashlib.sha256(name.encode()).hexdigest(), header


def decode_name(encoded: str) -> str:
    return "" if encoded == "%" else unquote(encoded, errors="strict")


class FileBackend(Backend):
    """Stores each object as one JSON file under ``folder``.

    Layout: ``<folder>/<namespace>/<encoded name>.json``. Writes go to a temporary file in the
    same folder, are fsynced, then renamed over the target, so a reader or a crash sees the
    old content or the new, never a mix.

    Locking uses POSIX record locks, which the kernel drops when the process dies, even by
    ``kill -9``, on files in ``<folder>/.locks/``. A claim locks one byte at an offset hashed
    from the key (no file per run, nothing to clean up); a conditional write locks one of 64
    striped bytes of another file, only for its version check and rename. Record locks belong
    to the process, so a per-process table keeps claims exclusive between tasks and backend
    objects of the same process too.

    Versions are ``inode-mtime-size`` of the file: every write makes a new inode.

    POSIX only (record locks and atomic ``rename``).

    Args:
        folder: the folder to use; created on first write.
        threads: how many worker threads do the blocking file operations. On a 2-core machine
            4 to 8 measured best: more threads fight over the GIL with the event loop.
    """

    def __init__(self, folder: str | os.PathLike[str], *, threads: int = 8) -> None:
        if fcntl is None:
            raise ConfigError(
                "the file backend needs POSIX file locks (Linux, macOS); on this system use"
                " 'memory:' or a backend of your own"
            )
        self._threads = ThreadBatcher(positive_int(threads, "threads", error=ConfigError))
        # Writes go in groups made durable together (see _write_all).
        self._writes: GroupRunner[_WriteJob, str] = GroupRunner(self._write_group, threads)
        self._appends: GroupRunner[_AppendJob, str] = GroupRunner(_append_all, threads)
        self.folder = Path(folder)
        self._root = os.fspath(folder)  # paths are built as strings: pathlib costs on a hot path
        self._made: set[str] = set()
        self._places: dict[Key, tuple[str, bytes | None, str | None]] = {}  # see _where
        self._lock_table: _Locks | None = None

    def __repr__(self) -> str:
        return f"FileBackend({str(self.folder)!r})"

    @classmethod
    def from_url(cls, url: str) -> FileBackend:
        """``file:<folder>`` (relative to the working directory) or ``file:///abs/path``."""
        rest = url.removeprefix("file:")
        if rest.startswith("//"):  # file:///abs/path
            rest = rest[2:]
        if not rest:
            raise ConfigError(f"backend {url!r} names no folder: use 'file:<folder>'")
        return cls(rest)

    def url(self) -> str:
        return f"file:{os.path.abspath(self.folder)}"

    # -- paths -------------------------------------------------------------------------------

    def _path(self, key: Key) -> str:
        return self._where(key)[0]

    def _where(self, key: Key) -> tuple[str, bytes | None, str | None]:
        """The file of ``key``, the header its content starts with (a long name's), and the
        file an earlier asyncflow gave it, if that differs (read when the file is absent).

        Kept per key: an invocation asks for a run's file three times or more."""
        where = self._places.get(key)
        if where is None:
            where = self._place(key)
            if len(self._places) >= _PLACES_KEPT:
                self._places.clear()
            self._places[key] = where
        return where

    def _place(self, key: Key) -> tuple[str, bytes | None, str | None]:
        namespace, name = key
        try:
            stem, header = file_stem(name)
        except UnicodeEncodeError:
            raise BackendError(
                f"the name {name.encode('utf-8', 'backslashreplace').decode()!r} is not text"
                " UTF-8 can encode (a lone surrogate)",
                location=os.path.join(self._root, namespace),
            ) from None
        folder = f"{self._root}{os.sep}{namespace}{os.sep}"
        legacy = None
        if header is None and not name.isascii():
            old = _legacy_name(name)
            if old != stem and len(old.encode()) <= _MAX_NAME_BYTES:
                legacy = f"{folder}{old}{_SUFFIX}"
        return f"{folder}{stem}{_SUFFIX}", header, legacy

    def locate(self, key: Key) -> str:
        try:
            return self._path(key)
        except BackendError:
            return os.path.join(self._root, key[0], "...")

    def _mkdir(self, path: str) -> None:
        if path not in self._made:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise _error("cannot create folder", path, exc) from exc
            self._made.add(path)

    def _locks(self) -> _Locks:
        if self._lock_table is None:
            self._mkdir(self._root)
            self._lock_table = _Locks.of(os.path.join(self._root, _LOCK_FOLDER))
        return self._lock_table

    async def aclose(self) -> None:
        # The lock files' descriptors (65 per folder) are closed once no backend of this
        # process uses the folder and no claim is held: a process that opens many stores one
        # after another (a test suite, a server per tenant) ran out of descriptors otherwise.
        # The next operation opens them again.
        table, self._lock_table = self._lock_table, None
        if table is not None:
            table.leave()

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        where = self._where(key)
        return await self._threads.run(lambda: _read_at(*where))

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        # One call per chunk: the reads of a chunk share a worker-thread hop.
        places = [self._where(key) for key in keys]
        chunks = [places[i : i + 64] for i in range(0, len(places), 64)]
        results: list[list[Entry | None]] = [[] for _ in chunks]
        failures: list[BackendError] = []

        async def one(i: int) -> None:
            try:
                results[i] = await self._threads.run(lambda: [_read_at(*w) for w in chunks[i]])
            except BackendError as exc:  # raised as itself below, not in a group
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(chunks)):
                tg.start_soon(one, i)
        if failures:
            raise failures[0]
        return [entry for chunk in results for entry in chunk]

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        path, header, legacy = self._where(key)
        if header is not None:
            data = header + data
        conditional = if_version is not None or if_absent
        locks = self._locks() if conditional else None

        return await self._writes.run((path, data, locks, key, if_version, if_absent, legacy))

    def _write_group(self, jobs: list[_WriteJob]) -> list[str | BaseException]:
        """The writes of a group, in a worker thread (see _write_all)."""
        made: dict[str, BackendError | None] = {}
        for job in jobs:
            folder = os.path.dirname(job[0])
            if folder not in made:
                try:
                    self._mkdir(folder)
                    made[folder] = None
                except BackendError as exc:
                    made[folder] = exc
        failed = {n: made[os.path.dirname(job[0])] for n, job in enumerate(jobs)}
        todo = [job for n, job in enumerate(jobs) if failed[n] is None]
        done = iter(_write_all(todo))
        return [next(done) if failed[n] is None else failed[n] for n in range(len(jobs))]  # type: ignore[misc]

    async def create_many(self, items: Sequence[tuple[Key, bytes]]) -> list[str | ConflictError]:
        # One worker-thread job per chunk of items (the hop per file cost more than its
        # write), each chunk made durable at once (see _create_all).
        results: list[str | ConflictError] = [""] * len(items)
        if not items:
            return results
        locks = self._locks()
        places = [self._where(key) for key, _ in items]
        failures: list[BackendError] = []

        def work(start: int, stop: int) -> None:
            for path, _, _ in places[start:stop]:
                self._mkdir(os.path.dirname(path))
            batch = [
                (key, data if header is None else header + data, path, legacy)
                for (key, data), (path, header, legacy) in zip(
                    items[start:stop], places[start:stop], strict=True
                )
            ]
            results[start:stop] = _create_all(batch, locks)

        async def chunk(start: int) -> None:
            stop = min(start + _CREATE_CHUNK, len(items))
            try:
                await self._threads.run(functools.partial(work, start, stop))
            except BackendError as exc:  # raised as itself below, not in a group
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for start in range(0, len(items), _CREATE_CHUNK):
                tg.start_soon(chunk, start)
        if failures:
            raise failures[0]
        return results

    appends = True

    async def append(self, key: Key, data: bytes, *, if_version: str) -> str:
        # In groups made durable together, as writes are (see _append_all).
        path = self._where(key)[0]
        return await self._appends.run((path, data, self._locks(), key, if_version))

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        path, _, legacy = self._where(key)
        locks = self._locks() if if_version is not None else None

        def work() -> None:
            try:
                if locks is None:
                    _unlink(path)
                    if legacy is not None:
                        _unlink(legacy)
                    return
                with locks.stripe(key):
                    _expect(path, _current(path, legacy), if_version, False)
                    _unlink(path)
                    if legacy is not None:
                        _unlink(legacy)
            except OSError as exc:
                raise _error("cannot delete", path, exc) from exc

        await self._threads.run(work)

    async def list(self, namespace: str) -> dict[str, str]:
        folder = os.path.join(self._root, namespace)

        def work() -> dict[str, str]:
            try:
                with os.scandir(folder) as it:
                    names = [e.name for e in it]
            except FileNotFoundError:
                return {}
            except OSError as exc:
                raise _error("cannot list", folder, exc) from exc
            found: dict[str, str] = {}
            legacy: dict[str, str] = {}  # names found under the file name of an earlier asyncflow
            for n in names:
                if not n.endswith(_SUFFIX) or n.startswith("."):
                    continue  # temporary files and files that are not ours by name
                path = os.path.join(folder, n)
                name, current = _listed_name(path, n[: -len(_SUFFIX)])
                if name is None:
                    # Not ours (another tool's, a copy renamed by hand): never read, never
                    # written; said, so that someone moves it.
                    logger.warning(
                        "%s is not a file asyncflow wrote (its name is not one asyncflow would"
                        " give); it is skipped: move it out of the folder",
                        path,
                    )
                    continue
                version = _version_of(path)
                if version is not None:  # else deleted since the scan
                    (found if current else legacy)[name] = version
            return legacy | found  # the current file wins: it is the one read

        return await self._threads.run(work)

    @asynccontextmanager
    async def claim(self, key: Key) -> AsyncIterator[bool]:
        # A non-blocking record lock takes microseconds: done here rather than in a worker
        # thread, whose hop would cost more than the call (measured: moving it to the worker
        # threads made a 10,000-run invocation a third slower).
        locks = self._locks()
        try:
            held = locks.try_claim(key)
        except OSError as exc:
            raise _error("cannot lock", locks.path, exc) from exc
        try:
            yield held
        finally:
            if held:
                locks.release(key)

    @asynccontextmanager
    async def claim_read(
        self, keys: Sequence[Key], versions: Sequence[str]
    ) -> AsyncIterator[builtins.list[Entry | None]]:
        # Backend.claim_read's sweep, with the claims taken and let go of in batches (one
        # pass over the lock table each) rather than a context manager per key.
        locks = self._locks()
        try:
            taken = locks.try_claim_many(keys)
        except OSError as exc:
            raise _error("cannot lock", locks.path, exc) from exc
        held = [keys[i] for i in taken]
        try:
            entries = await self.read_many(held)
            found: builtins.list[Entry | None] = [None] * len(keys)
            dropped: builtins.list[Key] = []
            kept: builtins.list[Key] = []
            for i, entry in zip(taken, entries, strict=True):
                if entry is not None and entry.version == versions[i]:
                    found[i] = entry
                    kept.append(keys[i])
                else:
                    dropped.append(keys[i])
            locks.release_many(dropped)  # changed or gone since listed: let go at once
            held = kept
            yield found
        finally:
            locks.release_many(held)


class _Locks:
    """The record locks of one folder's lock files, as held by this process.

    Claims are spread over 64 files, because the kernel keeps a file's record locks in one
    list that every lock call walks: an invocation holding 10,000 claims on one file made each
    call slow. Conditional writes lock bytes of one more file. Each file is opened once per
    process and never closed: POSIX drops every record lock a process holds on a file as soon
    as it closes *any* descriptor of that file. So the files stay open while any backend of
    this process uses the folder (``users``) or holds a claim in it, and are closed after.
    """

    _by_path: ClassVar[dict[str, _Locks]] = {}
    _made: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, path: str) -> _Locks:
        real = os.path.realpath(path)
        with cls._made:
            if real not in cls._by_path:
                cls._by_path[real] = cls(real)
            table = cls._by_path[real]
            table.users += 1
            return table

    def leave(self) -> None:
        """One user of the table is done with it; the last closes its files, unless a claim
        is still held (closing would drop that claim's lock)."""
        with _Locks._made:
            self.users -= 1
            with self.mutex:
                if self.users or self.claimed:
                    return
            del _Locks._by_path[self.path]
        for fd in (*self.claim_fds, self.write_fd):
            os.close(fd)

    def __init__(self, path: str) -> None:
        self.path = path  # the folder of lock files
        self.users = 0  # FileBackend objects of this process using it (see leave)
        try:
            os.makedirs(path, exist_ok=True)
            self.claim_fds = [_open_lock(os.path.join(path, f"claims-{n:02d}")) for n in range(64)]
            self.write_fd = _open_lock(os.path.join(path, "writes"))
        except OSError as exc:
            raise _error("cannot open lock files in", path, exc) from exc
        self.claimed: set[Key] = set()
        self.offsets: dict[tuple[int, int], int] = {}  # (file, offset) -> keys hashed there
        self.locked = [0] * len(self.claim_fds)  # per file: the offsets locked in it
        self.stripes = [threading.Lock() for _ in range(_STRIPES)]
        self.mutex = threading.Lock()  # over claimed and offsets: any thread may claim

    def _place(self, key: Key) -> tuple[int, int]:
        h = _hash(key)
        return h % len(self.claim_fds), h // len(self.claim_fds) % _CLAIM_SPACE

    def try_claim(self, key: Key) -> bool:
        place = self._place(key)
        with self.mutex:
            if key in self.claimed:
                return False  # held by this process
            if place not in self.offsets:
                try:
                    fcntl.lockf(
                        self.claim_fds[place[0]], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, place[1]
                    )
                except (BlockingIOError, PermissionError):
                    return False  # held by another process
                self.locked[place[0]] += 1
            self.offsets[place] = self.offsets.get(place, 0) + 1
            self.claimed.add(key)
            return True

    def try_claim_many(self, keys: Sequence[Key]) -> list[int]:
        """:meth:`try_claim` of each key, in one hold of the mutex; the indexes claimed."""
        taken: list[int] = []
        places = [self._place(key) for key in keys]
        fds = self.claim_fds
        with self.mutex:
            claimed, offsets = self.claimed, self.offsets
            for i, key in enumerate(keys):
                if key in claimed:
                    continue  # held by this process
                place = places[i]
                if place not in offsets:
                    try:
                        fcntl.lockf(fds[place[0]], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, place[1])
                    except (BlockingIOError, PermissionError):
                        continue  # held by another process
                    self.locked[place[0]] += 1
                offsets[place] = offsets.get(place, 0) + 1
                claimed.add(key)
                taken.append(i)
        return taken

    def release_many(self, keys: Sequence[Key]) -> None:
        """:meth:`release` of each key (claimed), in one hold of the mutex.

        A file none of whose offsets stays locked is unlocked whole, in one call: the kernel
        walks the file's list of locks for each call, which made letting go of 100,000 claims
        one by one a tenth of an invocation's CPU."""
        places = [self._place(key) for key in keys]
        unlocked: dict[int, list[int]] = {}  # per file, the offsets to unlock
        with self.mutex:
            for key, place in zip(keys, places, strict=True):
                self.claimed.discard(key)
                self.offsets[place] -= 1
                if not self.offsets[place]:
                    del self.offsets[place]
                    self.locked[place[0]] -= 1
                    unlocked.setdefault(place[0], []).append(place[1])
            for n, offsets in unlocked.items():
                if not self.locked[n]:
                    fcntl.lockf(self.claim_fds[n], fcntl.LOCK_UN, 0, 0)  # (0: to the end)
                    continue
                for offset in offsets:
                    fcntl.lockf(self.claim_fds[n], fcntl.LOCK_UN, 1, offset)

    def release(self, key: Key) -> None:
        place = self._place(key)
        with self.mutex:
            self.claimed.discard(key)
            self.offsets[place] -= 1
            if not self.offsets[place]:
                del self.offsets[place]
                self.locked[place[0]] -= 1
                fcntl.lockf(self.claim_fds[place[0]], fcntl.LOCK_UN, 1, place[1])

    @contextmanager
    def stripe(self, key: Key) -> Iterator[None]:
        """Exclusive, across threads and processes, among the keys of one stripe (blocking)."""
        n = _hash(key) % _STRIPES
        with self.stripes[n]:  # record locks do not exclude threads of one process
            while True:
                try:
                    fcntl.lockf(self.write_fd, fcntl.LOCK_EX, 1, n)
                    break
                except OSError as exc:
                    # The kernel's deadlock check sees processes, not threads: two processes
                    # each waiting with one thread for the stripe the other's thread holds
                    # look deadlocked, though each holder lets go at once. Try again.
                    if exc.errno != errno.EDEADLK:
                        raise
                    time.sleep(0.001)
            try:
                yield
            finally:
                fcntl.lockf(self.write_fd, fcntl.LOCK_UN, 1, n)


def _open_lock(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _hash(key: Key) -> int:
    # Two checksums make 64 bits; not Python's hash(), which differs between processes.
    data = f"{key[0]}\0{key[1]}".encode()
    return zlib.crc32(data) << 32 | zlib.adler32(data)


# -- blocking helpers, run in worker threads ---------------------------------------------------


def _error(what: str, path: str, exc: OSError) -> BackendError:
    return BackendError(f"{what} {path}: {exc.strerror or exc}", location=path)


def _version(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _version_of(path: str) -> str | None:
    try:
        return _version(os.stat(path))
    except FileNotFoundError:
        return None


def _listed_name(path: str, stem: str) -> tuple[str | None, bool]:
    """The name a listed file holds (``None``: not a file asyncflow wrote), and whether its
    file name is the current one (else an earlier asyncflow's, see _legacy_name)."""
    if stem.startswith(_LONG):
        try:
            with open(path, "rb") as f:
                line = f.readline(4 * _MAX_NAME_BYTES * 1024)
            import json

            name = json.loads(line.removeprefix(b"asyncflow-name "))
        except (OSError, ValueError, RecursionError):
            return None, False
        if isinstance(name, str) and line.startswith(b"asyncflow-name "):
            try:
                if file_stem(name)[0] == stem:
                    return name, True
            except UnicodeEncodeError:
                pass
        return None, False
    try:
        name = decode_name(stem)
        if encode_name(name) == stem:
            return name, True
        if _legacy_name(name) == stem:
            return name, False
    except UnicodeError:
        pass
    return None, False


def _read_at(path: str, header: bytes | None, legacy: str | None) -> Entry | None:
    entry = _read(path)
    if entry is None and legacy is not None:
        entry = _read(legacy)
    if entry is None or header is None:
        return entry
    if not entry.data.startswith(header):
        raise _unusable(path, "it does not start with the line naming what it holds")
    return Entry(entry.data[len(header) :], entry.version)


def _current(path: str, legacy: str | None) -> str | None:
    """The version of what is stored at ``path`` (or, in its absence, ``legacy``)."""
    version = _version_of(path)
    if version is None and legacy is not None:
        version = _version_of(legacy)
    return version


def _read(path: str) -> Entry | None:
    # os-level calls, not open(): the io layer's objects cost more than these small reads.
    try:
        # O_NONBLOCK: a FIFO in place of the file must not block the read forever.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unusable(path, "it is not a regular file")
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # it grew since the fstat (a writer not using asyncflow)
            data += b"".join(iter(lambda: os.read(fd, 65536), b""))
        return Entry(data, _version(st))
    except OSError as exc:
        raise _read_error(path, exc) from exc
    finally:
        os.close(fd)


# What is at the path, not the storage, is at fault: that one object cannot be used.
_UNUSABLE = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.ENXIO})


def _read_error(path: str, exc: OSError) -> BackendError:
    if exc.errno in _UNUSABLE:
        return _unusable(path, exc.strerror or str(exc))
    return _error("cannot read", path, exc)


def _unusable(path: str, why: str) -> DamagedRecordError:
    return DamagedRecordError(
        f"{path} cannot be used: {why}. asyncflow leaves it untouched; restore it from a"
        " backup or move it away.",
        location=path,
    )


def _expect(path: str, current: str | None, if_version: str | None, if_absent: bool) -> None:
    if if_absent and current is not None:
        raise ConflictError(f"{path} already exists", location=path)
    if if_version is not None and current != if_version:
        found = "no file" if current is None else f"version {current}"
        raise ConflictError(
            f"{path} changed: expected version {if_version}, found {found}", location=path
        )


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


#: A write for _write_all: path, data, the locks (conditional writes), key, if_version,
#: if_absent, the file an earlier asyncflow gave the key (see _legacy_name).
_WriteJob = tuple[str, bytes, "_Locks | None", Key, "str | None", bool, "str | None"]


def _write_all(jobs: list[_WriteJob]) -> list[str | BaseException]:
    """The writes of many callers, each as :func:`_write` (the version written, or the error
    to raise to that caller), made durable together.

    Each content goes to a temporary file; one ``syncfs`` makes them all durable (an fsync
    per file is a journal commit each: the write-heavy part of an invocation); then each
    is renamed over its target as :func:`_write` does, a conditional one under its stripe's
    lock after its check. A caller is answered after its rename, as before. Without
    ``syncfs`` (macOS), or for a group of one (see _SYNC_EACH): :func:`_write` one by one.
    """
    syncfs = _syncfs() if len(jobs) > _SYNC_EACH else None
    outcomes: list[str | BaseException] = [""] * len(jobs)
    if syncfs is None:
        for n, job in enumerate(jobs):
            try:
                outcomes[n] = _write(*job)
            except (BackendError, ConflictError) as exc:
                outcomes[n] = exc
        return outcomes
    tmps: list[str | None] = [None] * len(jobs)
    try:
        for n, (path, data, *_) in enumerate(jobs):
            tmp = f"{os.path.dirname(path)}{os.sep}.tmp-{os.urandom(8).hex()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                tmps[n] = tmp
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    outcomes[n] = _version(os.fstat(fd))
                finally:
                    os.close(fd)
            except OSError as exc:
                outcomes[n] = _write_error(path, exc)
        if not _sync_pending([job[0] for job in jobs], outcomes, syncfs, _write_error):
            return outcomes
        for n in [n for n in range(len(jobs)) if isinstance(outcomes[n], str)]:
            path, _, locks, key, if_version, if_absent, legacy = jobs[n]
            staged = tmps[n]
            assert staged is not None
            try:
                if locks is None:
                    os.replace(staged, path)
                    tmps[n] = None  # it is the file now
                    if legacy is not None:
                        _unlink(legacy)  # what it held is written over: the new one is read
                else:
                    with locks.stripe(key):
                        _expect(path, _current(path, legacy), if_version, if_absent)
                        os.replace(staged, path)
                        tmps[n] = None
                        if legacy is not None:
                            _unlink(legacy)
            except ConflictError as exc:
                outcomes[n] = exc
            except OSError as exc:
                outcomes[n] = _write_error(path, exc)
        return outcomes
    finally:
        for left in tmps:
            if left is not None:
                _unlink(left)


def _write(
    path: str,
    data: bytes,
    locks: _Locks | None,
    key: Key,
    if_version: str | None,
    if_absent: bool,
    legacy: str | None = None,
) -> str:
    tmp = f"{os.path.dirname(path)}{os.sep}.tmp-{os.urandom(8).hex()}"
    try:
        # Write and fsync outside the lock: the lock is held only for the check and the rename.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            version = _version(os.fstat(fd))
        finally:
            os.close(fd)
        if locks is None:
            os.replace(tmp, path)
            if legacy is not None:
                _unlink(legacy)  # what it held is written over: the new file is read now
        else:
            with locks.stripe(key):
                _expect(path, _current(path, legacy), if_version, if_absent)
                os.replace(tmp, path)
                if legacy is not None:
                    _unlink(legacy)
        return version
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise BackendError(f"no space left to write {path}", location=path) from exc
            raise _error("cannot write", path, exc) from exc
        raise


#: An append for _append_all: path, data, the locks, key, if_version.
_AppendJob = tuple[str, bytes, "_Locks", Key, str]


def _append_all(jobs: list[_AppendJob]) -> list[str | BaseException]:
    """The appends of many callers, each as :func:`_append` (the version written, or the
    error to raise to that caller), made durable together by one ``syncfs`` per folder (an
    fsync per file measured several times the cost) before any caller is answered. Without
    ``syncfs`` (macOS), or for a group of one (see _SYNC_EACH): :func:`_append` one by one,
    each fsyncing its file."""
    syncfs = _syncfs() if len(jobs) > _SYNC_EACH else None
    outcomes: list[str | BaseException] = [""] * len(jobs)
    for n, job in enumerate(jobs):
        try:
            outcomes[n] = _append(*job, sync=syncfs is None)
        except (BackendError, ConflictError) as exc:
            outcomes[n] = exc
    if syncfs is not None:
        _sync_pending(
            [job[0] for job in jobs],
            outcomes,
            syncfs,
            lambda path, exc: _error("cannot append to", path, exc),
        )
    return outcomes


def _append(
    path: str, data: bytes, locks: _Locks, key: Key, if_version: str, *, sync: bool = True
) -> str:
    """Append ``data`` to the file at ``path`` if it is at ``if_version``; its new version.

    Under the stripe lock of ``key`` (as conditional writes check and rename under it): the
    version checked is that of the file opened, and no writer replaces it until the data is
    in. The version then differs from every earlier one: the size grew. Synced after the lock
    is let go, as a write is synced before it takes it (``sync``: here; else the caller
    makes it durable before it answers).
    """
    try:
        with locks.stripe(key):
            try:
                # O_NONBLOCK: a FIFO in place of the file must not block the open.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK)
            except FileNotFoundError:
                _expect(path, None, if_version, False)
                raise  # (_expect raised: no file is never the version expected)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise _unusable(path, "it is not a regular file")
                _expect(path, _version(st), if_version, False)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                except BaseException:
                    # No part of it may stay: a later append would follow a torn line.
                    os.ftruncate(fd, st.st_size)
                    raise
                version = _version(os.fstat(fd))
            except BaseException:
                os.close(fd)
                raise
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return version
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BackendError(f"no space left to write {path}", location=path) from exc
        if exc.errno in _UNUSABLE:
            raise _unusable(path, exc.strerror or str(exc)) from exc
        raise _error("cannot append to", path, exc) from exc


def _syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(fd)`` (every write to the file system of ``fd`` made durable), or
    ``None`` where the C library has none (macOS)."""
    global _SYNCFS
    if _SYNCFS is False:
        import ctypes  # (loaded when used: imports cost a cold start)

        _SYNCFS = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    return _SYNCFS  # type: ignore[return-value]


_SYNCFS: object = False  # not looked up yet

# A group of writes or appends this small fsyncs each file rather than syncing the file
# system: syncfs also waits for every other process's unwritten data on that file system (a
# test suite, a build next door), so a lone caller (a run recording its steps one after
# another) paid for the neighbours' writes (measured alternately on a busy machine: 1.15 ms a
# step with syncfs, 0.79 ms with these fsyncs and the record's cheaper reads). For many files
# at once one syncfs still costs far less than an fsync each (each is a journal commit):
# 8 files, 0.4 ms against 2.5 ms here.
_SYNC_EACH = 1


def _sync_pending(
    paths: list[str],
    outcomes: list[str | BaseException],
    syncfs: Callable[[int], int],
    error: Callable[[str, OSError], BaseException],
) -> bool:
    """Make the writes whose outcome is still a version (``str``) durable, one ``syncfs``
    per folder of their ``paths``; if that fails, each of them gets ``error(path, exc)``
    instead. Whether it succeeded."""
    pending = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, str)]
    try:
        for folder in {os.path.dirname(paths[n]) for n in pending}:
            _sync_folder(folder, syncfs)
    except OSError as exc:
        for n in pending:
            outcomes[n] = error(paths[n], exc)
        return False
    return True


def _sync_folder(folder: str, syncfs: Callable[[int], int]) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), folder)
    finally:
        os.close(fd)


def _create_all(
    batch: list[tuple[Key, bytes, str, str | None]], locks: _Locks
) -> list[str | ConflictError]:
    """Create-only writes of many files: per item its version or the ConflictError.

    Each item is written to a temporary file; one ``syncfs`` makes them all durable at once
    (an fsync per file measured twice the time: each is a journal commit); then each is
    linked into place, which fails if the name exists (create-only with no check to race),
    under its stripe's lock as conditional writes are; a last ``syncfs`` makes the names
    durable before the caller is told. Without ``syncfs``, or for a name an earlier
    asyncflow gave another file name (see _legacy_name), item by item as :func:`_write`.
    """
    syncfs = _syncfs()
    results: list[str | ConflictError] = [""] * len(batch)
    written: list[tuple[int, str, str]] = []  # (item, temporary file, version)
    try:
        for i, (key, data, path, legacy) in enumerate(batch):
            if syncfs is None or legacy is not None:
                try:
                    results[i] = _write(path, data, locks, key, None, True, legacy)
                except ConflictError as exc:
                    results[i] = exc
                continue
            tmp = f"{os.path.dirname(path)}{os.sep}.tmp-{os.urandom(8).hex()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _write_error(path, exc) from exc
            written.append((i, tmp, ""))
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                written[-1] = (i, tmp, _version(os.fstat(fd)))
            except OSError as exc:
                raise _write_error(path, exc) from exc
            finally:
                os.close(fd)
        if not written:
            return results
        folders = {os.path.dirname(batch[i][2]) for i, _, _ in written}
        try:
            for folder in folders:
                _sync_folder(folder, syncfs)  # type: ignore[arg-type]  # not None here
        except OSError as exc:
            raise _write_error(batch[written[0][0]][2], exc) from exc
        for i, tmp, version in written:
            key, _, path, _ = batch[i]
            try:
                with locks.stripe(key):
                    os.link(tmp, path)
                results[i] = version
            except FileExistsError:
                results[i] = ConflictError(f"{path} already exists", location=path)
            except OSError as exc:
                raise _write_error(path, exc) from exc
        try:
            for folder in folders:
                _sync_folder(folder, syncfs)  # type: ignore[arg-type]
        except OSError as exc:
            raise _write_error(batch[written[0][0]][2], exc) from exc
        return results
    finally:
        for _, tmp, _ in written:
            _unlink(tmp)


def _write_error(path: str, exc: OSError) -> BackendError:
    if exc.errno == errno.ENOSPC:
        return BackendError(f"no space left to write {path}", location=path)
    return _error("cannot write", path, exc)
