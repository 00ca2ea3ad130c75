"""The backend conformance suite: what every :class:`asyncflow.Backend` must do.

Each check is an ``async def check(backend)`` that raises ``AssertionError`` (with a message
saying what went wrong) when the backend breaks the contract. The backend given must be open
and empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ._backend import Backend, Entry
from ._exceptions import ConflictError

__all__ = ["BACKEND_CHECKS", "check_backend"]

Check = Callable[[Backend], Awaitable[None]]
BACKEND_CHECKS: dict[str, Check] = {}

# Names a backend must keep apart and inside their namespace.
AWKWARD_NAMES = [
    "plain",
    "Plain",
    "../escape",
    "a/b",
    "a\\b",
    ".",
    "..",
    ".hidden",
    "",
    "%41",
    "A",
    "名前 with spaces",
    "emoji 🎉",
    "tab\tand\nnewline",
    "x" * 60,
    # Equal to a file system that ignores case or Unicode normalization; kept apart.
    "\u00c9",  # É
    "\u00e9",  # é
    "e\u0301",  # e and a combining accent
    "\u03a3",  # Σ
    "\u03c3",  # σ
    "\u03c2",  # ς
    "\u212a",  # the Kelvin sign
    "k",
    "\u00df",  # ß
    "ss",
    # Long names: longer than many file systems allow in a file name.
    "s" * 300,
    "名" * 84,
    "名" * 85,
]


def _require(condition: bool, message: str) -> None:
    # Not `assert`: the suite must check even under `python -O`.
    if not condition:
        raise AssertionError(message)


def _present(entry: Entry | None, message: str) -> Entry:
    if entry is None:
        raise AssertionError(message)
    return entry


def _check(fn: Check) -> Check:
    BACKEND_CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


async def _conflicts(op: Awaitable[object], what: str) -> None:
    try:
        await op
    except ConflictError:
        return
    raise AssertionError(f"{what} should raise ConflictError")


@_check
async def check_read_missing(b: Backend) -> None:
    _require(await b.read(("ns", "missing")) is None, "reading a missing key must return None")


@_check
async def check_write_read(b: Backend) -> None:
    data = bytes(range(256))  # not UTF-8: backends store bytes, not text
    version = await b.write(("ns", "k"), data)
    entry = _present(await b.read(("ns", "k")), "a written key must be readable")
    _require(entry.data == data, "read must return the bytes written")
    _require(entry.version == version, "read must return the version write returned")
    version2 = await b.write(("ns", "k"), b"second")
    _require(version2 != version, "every write must make a new version")
    entry = _present(await b.read(("ns", "k")), "an overwritten key must be readable")
    _require(entry.data == b"second", "an unconditional write overwrites")


@_check
async def check_if_absent(b: Backend) -> None:
    await b.write(("ns", "k"), b"first", if_absent=True)
    await _conflicts(
        b.write(("ns", "k"), b"second", if_absent=True), "if_absent on an existing key"
    )
    entry = await b.read(("ns", "k"))
    _require(entry is not None and entry.data == b"first", "a failed if_absent write changed data")


@_check
async def check_if_version(b: Backend) -> None:
    v1 = await b.write(("ns", "k"), b"one")
    v2 = await b.write(("ns", "k"), b"two", if_version=v1)
    await _conflicts(b.write(("ns", "k"), b"stale", if_version=v1), "a write with a stale version")
    entry = _present(await b.read(("ns", "k")), "a failed conditional write deleted data")
    _require(entry.data == b"two", "a failed conditional write changed data")
    _require(entry.version == v2, "a failed conditional write changed the version")
    await _conflicts(b.write(("ns", "gone"), b"x", if_version=v2), "if_version on a missing key")
    _require(await b.read(("ns", "gone")) is None, "a failed conditional write created a key")


@_check
async def check_delete(b: Backend) -> None:
    await b.delete(("ns", "missing"))  # not an error
    v1 = await b.write(("ns", "k"), b"one")
    v2 = await b.write(("ns", "k"), b"two")
    await _conflicts(b.delete(("ns", "k"), if_version=v1), "a delete with a stale version")
    _require(await b.read(("ns", "k")) is not None, "a failed conditional delete deleted")
    await b.delete(("ns", "k"), if_version=v2)
    _require(await b.read(("ns", "k")) is None, "delete must remove the key")
    await _conflicts(b.delete(("ns", "k"), if_version=v2), "a conditional delete of nothing")
    await b.write(("ns", "k2"), b"x")
    await b.delete(("ns", "k2"))
    _require(await b.read(("ns", "k2")) is None, "the backend broke the contract")


@_check
async def check_names(b: Backend) -> None:
    versions = {}
    for i, name in enumerate(AWKWARD_NAMES):
        versions[name] = await b.write(("ns", name), str(i).encode())
    listed = await b.list("ns")
    _require(sorted(listed) == sorted(AWKWARD_NAMES), "list must return every name")
    _require(listed == versions, "list must give each name's current version")
    for i, name in enumerate(AWKWARD_NAMES):
        entry = await b.read(("ns", name))
        _require(
            entry is not None and entry.data == str(i).encode(), f"name {name!r} was mixed up"
        )
    _require(await b.list("other") == {}, "a namespace must not see another's names")
    _require(await b.list("missing") == {}, "listing an empty namespace returns nothing")


@_check
async def check_read_many(b: Backend) -> None:
    await b.write(("ns", "a"), b"A")
    await b.write(("ns", "c"), b"C")
    entries = await b.read_many([("ns", "a"), ("ns", "b"), ("ns", "c")])
    _require([e.data if e else None for e in entries] == [b"A", None, b"C"], "read_many order")
    _require(await b.read_many([]) == [], "the backend broke the contract")


@_check
async def check_claim(b: Backend) -> None:
    async with b.claim(("ns", "k")) as held:
        _require(held, "an unheld key must be claimable")
        async with b.claim(("ns", "k")) as again:
            _require(not again, "a held key must not be claimable again")
        async with b.claim(("ns", "other")) as other:
            _require(other, "claims on different keys must not block each other")
    async with b.claim(("ns", "k")) as held:
        _require(held, "a claim must be released when its block exits")


@_check
async def check_compare_and_swap_race(b: Backend) -> None:
    """Many writers incrementing one counter with compare-and-swap lose no increment."""
    key = ("ns", "counter")
    await b.write(key, b"0")
    writers, conflicts = 20, 0

    async def increment() -> None:
        nonlocal conflicts
        while True:
            entry = await b.read(key)
            if entry is None:
                raise AssertionError("the counter vanished")
            try:
                await b.write(key, b"%d" % (int(entry.data) + 1), if_version=entry.version)
                return
            except ConflictError:
                conflicts += 1

    async with anyio.create_task_group() as tg:
        for _ in range(writers):
            tg.start_soon(increment)
    entry = await b.read(key)
    _require(
        entry is not None and int(entry.data) == writers,
        f"lost updates: {writers} increments made {entry.data if entry else None!r}",
    )


@_check
async def check_create_race(b: Backend) -> None:
    """Of many writers creating one key with if_absent, exactly one wins."""
    winners: list[int] = []

    async def create(i: int) -> None:
        try:
            await b.write(("ns", "once"), b"%d" % i, if_absent=True)
            winners.append(i)
        except ConflictError:
            pass

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(create, i)
    _require(len(winners) == 1, f"{len(winners)} writers won an if_absent race")
    entry = await b.read(("ns", "once"))
    _require(
        entry is not None and entry.data == b"%d" % winners[0], "the backend broke the contract"
    )


@_check
async def check_claim_read(b: Backend) -> None:
    """Claiming many keys at their listed versions reads them and holds them."""
    await b.write(("ns", "a"), b"A")
    await b.write(("ns", "changed"), b"old")
    listed = await b.list("ns")
    await b.write(("ns", "changed"), b"new")
    keys = [("ns", "a"), ("ns", "changed"), ("ns", "gone")]
    async with b.claim_read(keys, [listed["a"], listed["changed"], "no-such-version"]) as found:
        _require(len(found) == 3, "claim_read must give one result per key")
        a, changed, gone = found
        a = _present(a, "claim_read must read a key still at its listed version")
        _require(a.data == b"A", "claim_read must return the bytes stored")
        _require(changed is None, "claim_read must skip a key changed since the listing")
        _require(gone is None, "claim_read must skip a key that is not there")
        async with b.claim(("ns", "a")) as again:
            _require(not again, "a key held by claim_read must not be claimable again")
        async with b.claim(("ns", "changed")) as other:
            _require(other, "claim_read must not hold the keys it skipped")
        version = await b.write(("ns", "a"), b"A2", if_version=a.version)
        entry = _present(await b.read(("ns", "a")), "a write under claim_read was lost")
        _require(entry == Entry(b"A2", version), "write with claim_read's version must work")
    async with b.claim(("ns", "a")) as held:
        _require(held, "claim_read must release its claims when its block exits")
    async with b.claim_read([], []) as none:
        _require(list(none) == [], "claim_read of no keys must give nothing")


@_check
async def check_write_and_release(b: Backend) -> None:
    """The last write under a claim stores like write(), and the key is claimable after."""
    listed = await b.write(("ns", "k"), b"one")
    async with b.claim_read([("ns", "k")], [listed]) as [held]:
        held = _present(held, "an unheld key must be claimable")
        await _conflicts(
            b.write_and_release(("ns", "k"), b"x", if_version=listed + "-stale"),
            "write_and_release with a stale version",
        )
        version = await b.write_and_release(("ns", "k"), b"two", if_version=held.version)
    _require(await b.read(("ns", "k")) == Entry(b"two", version), "write_and_release lost data")
    async with b.claim_read([("ns", "k")], [version]) as [again]:
        _require(again is not None, "a released key must be claimable again")


@_check
async def check_append(b: Backend) -> None:
    """A backend that appends (``appends``) adds to an object at its version, and only then."""
    if not b.appends:
        return  # (asyncflow never calls append on it)
    for name in ("k", "s" * 300, "名" * 85):  # long names too: stored under another name
        key = ("ns", name)
        v1 = await b.write(key, b"head")
        v2 = await b.append(key, b"\n[0]\n", if_version=v1)
        _require(v2 != v1, "an append must make a new version")
        entry = _present(await b.read(key), "an appended key must be readable")
        _require(entry == Entry(b"head\n[0]\n", v2), "read must return what was appended")
        _require((await b.list("ns"))[name] == v2, "list must give the version append made")
        await _conflicts(b.append(key, b"x", if_version=v1), "an append with a stale version")
        await _conflicts(
            b.write(key, b"x", if_version=v1), "a write at the version before an append"
        )
        v3 = await b.append(key, b"[1]\n", if_version=v2)
        _require(v3 not in (v1, v2), "every append must make a new version")
        entry = _present(await b.read(key), "an appended key must be readable")
        _require(entry == Entry(b"head\n[0]\n[1]\n", v3), "a failed append changed data")
        v4 = await b.write(key, b"whole", if_version=v3)
        await _conflicts(b.append(key, b"x", if_version=v3), "an append over a newer write")
        _require(await b.read(key) == Entry(b"whole", v4), "a failed append changed data")
    await _conflicts(b.append(("ns", "gone"), b"x", if_version="1"), "an append to nothing")
    _require(await b.read(("ns", "gone")) is None, "a failed append created a key")


@_check
async def check_append_race(b: Backend) -> None:
    """Appends and compare-and-swap writes racing on one object lose nothing."""
    if not b.appends:
        return
    key = ("ns", "log")
    await b.write(key, b"")
    done = 0

    async def add(appending: bool) -> None:
        nonlocal done
        for _ in range(5):
            while True:
                entry = _present(await b.read(key), "the object vanished")
                try:
                    if appending:
                        await b.append(key, b"a", if_version=entry.version)
                    else:
                        await b.write(key, entry.data + b"w", if_version=entry.version)
                    done += 1
                    break
                except ConflictError:
                    pass

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(add, i % 2 == 0)
    entry = _present(await b.read(key), "the object vanished")
    _require(
        len(entry.data) == done == 50 and entry.data.count(b"a") == 25,
        f"lost updates: 50 appends and writes made {entry.data!r}",
    )


async def check_backend(make_backend: Callable[[], Awaitable[Backend]]) -> None:
    """Run every conformance check, each on a fresh backend from ``make_backend``.

    ``make_backend`` returns an open, empty backend. Raises ``AssertionError`` naming the
    first check that fails.
    """
    for name, check in BACKEND_CHECKS.items():
        backend = await make_backend()
        try:
            await check(backend)
        except AssertionError as exc:
            raise AssertionError(f"backend check {name!r} failed: {exc}") from exc
        finally:
            await backend.aclose()
