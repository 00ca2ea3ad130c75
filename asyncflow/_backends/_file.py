"""The local-folder backend, asyncflow's default (``file:<folder>``)."""

from __future__ import annotations

import errno
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

import anyio

from .._backend import Backend, Entry, Key
from .._exceptions import BackendError, ConfigError, ConflictError
from ._threads import ThreadBatcher

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileBackend"]

# Characters never written raw into a file name: path separators and characters other
# systems reject, plus ASCII capitals, so that two names differing only in case stay two files
# on case-insensitive file systems (macOS, Windows shares).
_UNSAFE = frozenset('/\\%:*?"<>|') | frozenset(map(chr, range(0x20))) | {"\x7f"}
_UNSAFE |= frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_NAME_BYTES = 200  # file systems cap a name at 255 bytes; leave room for suffixes
_SUFFIX = ".json"
_LOCK_FOLDER = ".locks"
_CLAIM_SPACE = 1 << 56  # a claim locks one byte at a hash of the key, below this offset
_STRIPES = 64  # conditional writes lock one of these bytes of another file


def encode_name(name: str) -> str:
    """Turn any Unicode name into one safe file name, reversibly (see :func:`decode_name`)."""
    if not name:
        return "%"  # a lone "%" is never produced otherwise
    parts = ["".join(f"%{b:02X}" for b in ch.encode()) if ch in _UNSAFE else ch for ch in name]
    if parts[0] == ".":  # never ".", "..", or a hidden file
        parts[0] = "%2E"
    return "".join(parts)


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
        self.folder = Path(folder)
        self._root = os.fspath(folder)  # paths are built as strings: pathlib costs on a hot path
        self._threads = ThreadBatcher(threads)
        self._made: set[str] = set()
        self._lock_table: _Locks | None = None

    def __repr__(self) -> str:
        return f"FileBackend({str(self.folder)!r})"

    # -- paths -------------------------------------------------------------------------------

    def _path(self, key: Key) -> str:
        namespace, name = key
        encoded = encode_name(name)
        if len(encoded.encode()) > _MAX_NAME_BYTES:
            raise BackendError(
                f"name too long for the file backend ({len(name)} characters): {name[:40]!r}...",
                location=os.path.join(self._root, namespace),
            )
        return f"{self._root}{os.sep}{namespace}{os.sep}{encoded}{_SUFFIX}"

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

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        path = self._path(key)
        return await self._threads.run(lambda: _read(path))

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        # One call per chunk: the reads of a chunk share a worker-thread hop.
        paths = [self._path(key) for key in keys]
        chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
        results: list[list[Entry | None]] = [[] for _ in chunks]

        async def one(i: int) -> None:
            results[i] = await self._threads.run(lambda: [_read(p) for p in chunks[i]])

        async with anyio.create_task_group() as tg:
            for i in range(len(chunks)):
                tg.start_soon(one, i)
        return [entry for chunk in results for entry in chunk]

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        path = self._path(key)
        conditional = if_version is not None or if_absent
        locks = self._locks() if conditional else None

        def work() -> str:
            self._mkdir(os.path.dirname(path))
            return _write(path, data, locks, key, if_version, if_absent)

        return await self._threads.run(work)

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        path = self._path(key)
        locks = self._locks() if if_version is not None else None

        def work() -> None:
            try:
                if locks is None:
                    _unlink(path)
                    return
                with locks.stripe(key):
                    _expect(path, _version_of(path), if_version, False)
                    _unlink(path)
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
            found = {}
            for n in names:
                if not n.endswith(_SUFFIX) or n.startswith("."):
                    continue  # temporary files and files that are not ours by name
                stem = n[: -len(_SUFFIX)]
                try:
                    name = decode_name(stem)
                except UnicodeDecodeError:
                    name = None
                if name is None or encode_name(name) != stem:
                    raise BackendError(
                        f"{os.path.join(folder, n)} is not a file asyncflow wrote (its name is"
                        " not one asyncflow would give); move it out of the folder",
                        location=os.path.join(folder, n),
                    )
                version = _version_of(os.path.join(folder, n))
                if version is not None:  # else deleted since the scan
                    found[name] = version
            return found

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


class _Locks:
    """The record locks of one folder's lock files, as held by this process.

    Claims are spread over 64 files, because the kernel keeps a file's record locks in one
    list that every lock call walks: an invocation holding 10,000 claims on one file made each
    call slow. Conditional writes lock bytes of one more file. Each file is opened once per
    process and never closed: POSIX drops every record lock a process holds on a file as soon
    as it closes *any* descriptor of that file.
    """

    _by_path: ClassVar[dict[str, _Locks]] = {}
    _made: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, path: str) -> _Locks:
        real = os.path.realpath(path)
        with cls._made:
            if real not in cls._by_path:
                cls._by_path[real] = cls(real)
            return cls._by_path[real]

    def __init__(self, path: str) -> None:
        self.path = path  # the folder of lock files
        try:
            os.makedirs(path, exist_ok=True)
            self.claim_fds = [_open_lock(os.path.join(path, f"claims-{n:02d}")) for n in range(64)]
            self.write_fd = _open_lock(os.path.join(path, "writes"))
        except OSError as exc:
            raise _error("cannot open lock files in", path, exc) from exc
        self.claimed: set[Key] = set()
        self.offsets: dict[tuple[int, int], int] = {}  # (file, offset) -> keys hashed there
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
            self.offsets[place] = self.offsets.get(place, 0) + 1
            self.claimed.add(key)
            return True

    def release(self, key: Key) -> None:
        place = self._place(key)
        with self.mutex:
            self.claimed.discard(key)
            self.offsets[place] -= 1
            if not self.offsets[place]:
                del self.offsets[place]
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


def _read(path: str) -> Entry | None:
    # os-level calls, not open(): the io layer's objects cost more than these small reads.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error("cannot read", path, exc) from exc
    try:
        st = os.fstat(fd)
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # it grew since the fstat (a writer not using asyncflow)
            data += b"".join(iter(lambda: os.read(fd, 65536), b""))
        return Entry(data, _version(st))
    except OSError as exc:
        raise _error("cannot read", path, exc) from exc
    finally:
        os.close(fd)


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


def _write(
    path: str,
    data: bytes,
    locks: _Locks | None,
    key: Key,
    if_version: str | None,
    if_absent: bool,
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
        else:
            with locks.stripe(key):
                _expect(path, _version_of(path), if_version, if_absent)
                os.replace(tmp, path)
        return version
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise BackendError(f"no space left to write {path}", location=path) from exc
            raise _error("cannot write", path, exc) from exc
        raise
