"""The store's layout: where each thing is kept, under which name, in which bytes.

Stores written by earlier versions must keep working, so the names and the bytes below are
the format (they are what the code before the Store wrote). And the Store is the only module
that knows them: nothing else reads or writes the backend's objects.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from asyncflow import Context
from asyncflow.testing import MockClock

MakeFlow = Callable[..., asyncflow.Flow]

PACKAGE = Path(asyncflow.__file__).parent
# The backend's data methods; open/aclose (its lifetime) are the Flow's.
DATA_METHODS = {
    "read",
    "read_many",
    "write",
    "delete",
    "list",
    "claim",
    "claim_read",
    "write_and_release",
    "locate",
}
# The modules that are backends, or check them, rather than use one.
BACKEND_MODULES = {"_store.py", "_backend.py", "_conformance.py", "testing.py"}


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_only_the_store_reads_and_writes_the_backend() -> None:
    """The layout is known in one module: any other calling ``backend.read(...)`` and the like
    would be a second place that names namespaces and keys."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "_backends" or path.name in BACKEND_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else ""
            )
            if name in ("backend", "_backend") and node.func.attr in DATA_METHODS:
                offenders.append(f"{relative}:{node.lineno}: {name}.{node.func.attr}")
    assert offenders == []


def test_the_store_imports_none_of_the_modules_that_use_it() -> None:
    tree = ast.parse((PACKAGE / "_store.py").read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    users = {"_engine", "_events", "_manage", "_flow", "_context", "_cli", "_dashboard"}
    assert imported & users == set()


async def _stored(backend: asyncflow.Backend) -> dict[str, dict[str, bytes]]:
    namespaces = ("active", "finished", "state", "waits", "events", "cron", "keys")
    stored: dict[str, dict[str, bytes]] = {}
    for namespace in namespaces:
        names = sorted(await backend.list(namespace))
        entries = await backend.read_many([(namespace, n) for n in names])
        stored[namespace] = {n: e.data for n, e in zip(names, entries, strict=True) if e}
    return stored


@pytest.mark.anyio
async def test_the_layout_of_runs_state_index_log_marks_and_keys(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def setter(c: Context) -> None:
        await c.set_state("colour", "blue")

    @flow.workflow()
    async def waiter(c: Context) -> Any:
        return await c.wait_event("go")

    @flow.workflow()
    async def sleeper(c: Context) -> None:
        await c.sleep(3600)

    @flow.workflow(trigger=asyncflow.cron_trigger("*/5 * * * *"))
    async def ticking(c: Context, args: Any) -> None:
        pass

    [set_run] = await flow.run("setter")
    [wait_id] = await flow.start("waiter", key="k1")
    [sleep_id] = await flow.start("sleeper")
    await flow.run()
    async with flow:
        await flow._deliver("other", {"n": 1}, key="m1")
    stored = await _stored(flow.backend)

    assert set(stored["active"]) == {wait_id, sleep_id}
    assert set(stored["finished"]) == {set_run.run_id}
    for namespace in ("active", "finished"):
        for name, data in stored[namespace].items():
            record = json.loads(data)
            assert (record["asyncflow"], record["run_id"]) == ("run", name)
    assert stored["state"] == {"colour": b'{"asyncflow":"state","name":"colour","value":"blue"}'}
    # The first invocation of a cron workflow notes the time.
    assert stored["cron"] == {"ticking": b'{"asyncflow": "cron", "checked": 1700000000.0}'}

    # The index: <run id>.<wake time in ms, hex, or ->.<event hash or ->[.<since>]
    [wait_step] = json.loads(stored["active"][wait_id])["steps"]
    wake = f"{math.ceil((clock() + 3600) * 1000):x}"
    assert stored["waits"] == {
        f"{wait_id}.-.{_h('go')[:16]}.{wait_step['since']}": b"{}",
        f"{sleep_id}.{wake}.-": b"{}",
    }

    # The event log: <event id>.<event hash>, the event's name and args.
    [(logged, data)] = stored["events"].items()
    event_id, _, digest = logged.partition(".")
    assert digest == _h("other")[:16]
    assert data == b'{"asyncflow":"event","name":"other","args":{"n":1}}'

    # Idempotency keys: a hash of workflow and key (of event and key for events).
    assert stored["keys"] == {
        _h("waiter\0k1")[:40]: (
            '{"asyncflow":"key","workflow":"waiter","key":"k1","run_id":"' + wait_id + '"}'
        ).encode(),
        _h("\0event\0other\0m1")[:40]: (
            '{"asyncflow":"key","event":"other","key":"m1","event_id":"' + event_id + '"}'
        ).encode(),
    }

    # Finishing moves a run to `finished` and takes its index entries away.
    await flow.cancel(sleep_id)
    await flow.emit("go", 7)
    stored = await _stored(flow.backend)
    assert set(stored["active"]) == set()
    assert set(stored["finished"]) == {set_run.run_id, wait_id, sleep_id}
    assert stored["waits"] == {}
