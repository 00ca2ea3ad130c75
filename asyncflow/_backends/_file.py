"""The local-folder backend, asyncflow's default (``file:<folder>``)."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import unquote

import anyio
import anyio.to_thread

from .._backend import Backend, Entry, Key
from .._exceptions import BackendError, ConflictError

__all__ = ["FileBackend"]

# Characters never written raw into a file name: path separators and characters other
# systems reject, plus ASCII capitals, so that two names differing only in case stay two files
# on case-insensitive file systems (macOS, Windows shares).
_UNSAFE = frozenset('/\\%:*?"<>|') | frozenset(map(chr, range(0x20))) | {"\x7f"}
_UNSAFE |= frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_NAME_BYTES = 200  # file systems cap a name at 255 bytes; leave room for suffixes
_LOCK_STRIPES = 64
_SUFFIX = ".json"


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
    old content or the new, never a mix. Conditional writes check the current version under a
    short ``flock`` (one of 64 striped lock files), so they are atomic across processes.
    Claims are ``flock`` locks on a per-key file under ``.claims/``: the kernel drops them when
    the holder dies, even by ``kill -9``.

    Versions are ``inode-mtime-size`` of the file: every write makes a new inode.

    POSIX only (it relies on ``flock`` and atomic ``rename``).

    Args:
        folder: the folder to use; created on first write.
        threads: how many blocking file operations may run at once in worker threads.
    """

    def __init__(self, folder: str | os.PathLike[str], *, threads: int = 16) -> None:
        self.folder = Path(folder)
        self._limiter = anyio.CapacityLimiter(threads)
        self._made: set[Path] = set()

    def __repr__(self) -> str:
        return f"FileBackend({str(self.folder)!r})"

    # -- paths -------------------------------------------------------------------------------

    def _path(self, key: Key) -> Path:
        namespace, name = key
        encoded = encode_name(name)
        if len(encoded.encode()) > _MAX_NAME_BYTES:
            raise BackendError(
                f"name too long for the file backend ({len(name)} characters): {name[:40]!r}...",
                location=str(self.folder / namespace),
            )
        return self.folder / namespace / (encoded + _SUFFIX)

    def locate(self, key: Key) -> str:
        try:
            return str(self._path(key))
        except BackendError:
            return str(self.folder / key[0] / "...")

    def _mkdir(self, path: Path) -> None:
        if path not in self._made:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _error("cannot create folder", path, exc) from exc
            self._made.add(path)

    def _stripe(self, key: Key) -> Path:
        n = zlib.crc32(f"{key[0]}/{key[1]}".encode()) % _LOCK_STRIPES
        return self.folder / ".locks" / f"{n:02d}.lock"

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        path = self._path(key)
        return await anyio.to_thread.run_sync(_read, path, limiter=self._limiter)

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        # One worker-thread hop per batch instead of per file: on a many-run invocation the
        # hop, not the read, is what costs.
        paths = [self._path(key) for key in keys]
        batches = [paths[i : i + 64] for i in range(0, len(paths), 64)]
        results: list[list[Entry | None]] = [[] for _ in batches]

        async def one(i: int) -> None:
            results[i] = await anyio.to_thread.run_sync(
                lambda: [_read(p) for p in batches[i]], limiter=self._limiter
            )

        async with anyio.create_task_group() as tg:
            for i in range(len(batches)):
                tg.start_soon(one, i)
        return [entry for batch in results for entry in batch]

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        path = self._path(key)
        stripe = self._stripe(key) if (if_version is not None or if_absent) else None

        def work() -> str:
            self._mkdir(path.parent)
            if stripe is not None:
                self._mkdir(stripe.parent)
            return _write(path, data, stripe, if_version, if_absent, self.locate(key))

        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        path = self._path(key)
        stripe = self._stripe(key)

        def work() -> None:
            try:
                if if_version is None:
                    _unlink(path)
                    return
                self._mkdir(stripe.parent)
                with _locked(stripe):
                    _expect(path, _version_of(path), if_version, False)
                    _unlink(path)
            except OSError as exc:
                raise _error("cannot delete", path, exc) from exc

        await anyio.to_thread.run_sync(work, limiter=self._limiter)

    async def list(self, namespace: str) -> list[str]:
        folder = self.folder / namespace

        def work() -> list[str]:
            try:
                with os.scandir(folder) as it:
                    names = [e.name for e in it]
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise _error("cannot list", folder, exc) from exc
            found = []
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
                        f"{folder / n} is not a file asyncflow wrote (its name is not one"
                        " asyncflow would give); move it out of the folder",
                        location=str(folder / n),
                    )
                found.append(name)
            return found

        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    @asynccontextmanager
    async def claim(self, key: Key) -> AsyncIterator[bool]:
        folder = self.folder / ".claims" / key[0]
        path = folder / (encode_name(key[1]) + ".lock")
        # The lock file is never removed: a holder that unlinked it on release could leave a
        # waiter locking the unlinked file while a newcomer locks a new one, both "holding".
        # Opening and a non-blocking flock of a local file take microseconds: done here rather
        # than in a worker thread, whose hop would cost more than the call.
        try:
            self._mkdir(folder)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _error("cannot open claim file", path, exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError as exc:
                raise _error("cannot lock claim file", path, exc) from exc
            yield True
        finally:
            os.close(fd)  # closing releases the flock


# -- blocking helpers, run in worker threads ---------------------------------------------------


def _error(what: str, path: Path, exc: OSError) -> BackendError:
    return BackendError(f"{what} {path}: {exc.strerror or exc}", location=str(path))


def _version(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _version_of(path: Path) -> str | None:
    try:
        return _version(os.stat(path))
    except FileNotFoundError:
        return None


def _read(path: Path) -> Entry | None:
    try:
        with open(path, "rb") as f:
            return Entry(f.read(), _version(os.fstat(f.fileno())))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error("cannot read", path, exc) from exc


def _expect(path: Path, current: str | None, if_version: str | None, if_absent: bool) -> None:
    if if_absent and current is not None:
        raise ConflictError(f"{path} already exists", location=str(path))
    if if_version is not None and current != if_version:
        found = "no file" if current is None else f"version {current}"
        raise ConflictError(
            f"{path} changed: expected version {if_version}, found {found}", location=str(path)
        )


class _locked:
    """Hold an exclusive flock on ``path`` (blocking; only ever held for a stat and a rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _write(
    path: Path,
    data: bytes,
    stripe: Path | None,
    if_version: str | None,
    if_absent: bool,
    location: str,
) -> str:
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
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
        if stripe is None:
            os.replace(tmp, path)
        else:
            with _locked(stripe):
                _expect(path, _version_of(path), if_version, if_absent)
                os.replace(tmp, path)
        return version
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise BackendError(
                    f"no space left to write {location}", location=location
                ) from exc
            raise _error("cannot write", path, exc) from exc
        raise
