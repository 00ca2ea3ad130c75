"""asyncflow asks which async library runs it the way anyio and httpx do (sniffio), so a trio
that is only installed, whatever its version, never changes how an asyncio run goes."""

from __future__ import annotations

import sys
import types

import anyio
import pytest

import asyncflow
from asyncflow import Context


def test_an_old_trio_installed_next_to_asyncio_does_not_break_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # trio 0.22 (still what some system Pythons ship) has a `lowlevel` without in_trio_run:
    # asking it whether it runs failed every asyncio run with AttributeError.
    old_trio = types.ModuleType("trio")
    old_trio.lowlevel = types.SimpleNamespace(current_task=lambda: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trio", old_trio)
    flow = asyncflow.setup("memory:")
    done: list[str] = []

    @flow.sideeffect()
    async def note(c: Context, name: str) -> None:
        done.append(name)

    @flow.workflow()
    async def greet(c: Context, args: dict[str, str]) -> str:
        await note(c, args["name"])
        await c.log(f"hello {args['name']}")
        return args["name"]

    async def main() -> list[asyncflow.RunResult]:
        async with flow:
            return await flow.run("greet", {"name": "ann"})

    results = anyio.run(main, backend="asyncio")
    assert [(r.status, r.result, r.logs) for r in results] == [("succeeded", "ann", ["hello ann"])]
    assert done == ["ann"]
