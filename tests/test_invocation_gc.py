"""An invocation of many runs makes the cyclic garbage collector's passes rarer while it goes
on (the records of 100,000 runs made the full passes a fifth of it), and leaves the program's
own thresholds as they were, or as the program set them meanwhile."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

import asyncflow
from asyncflow import Context

pytestmark = pytest.mark.anyio


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(900, 11, 12)  # the program's own
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _flow(seen: list[tuple[int, int, int]], during: Any = None) -> asyncflow.Flow:
    flow = asyncflow.setup("memory:")

    @flow.sideeffect()
    async def probe(c: Context) -> None:
        seen.append(gc.get_threshold())
        if during is not None and len(seen) == 1:
            during()

    @flow.workflow()
    async def watch(c: Context, args: Any) -> None:
        await probe(c)
        await c.pause_once()

    return flow


async def test_many_runs_collect_rarer_and_the_thresholds_are_set_back(thresholds: None) -> None:
    seen: list[tuple[int, int, int]] = []
    flow = _flow(seen)
    await flow.start_many("watch", [{"i": i} for i in range(1000)])
    results = await flow.run()
    assert [r.status for r in results] == ["paused"] * 1000
    assert set(seen) == {(50_000, 11, 12)}
    assert gc.get_threshold() == (900, 11, 12)

    seen.clear()
    few = _flow(seen)
    await few.start_many("watch", [{"i": i} for i in range(10)])
    await few.run()
    assert set(seen) == {(900, 11, 12)}, "a small invocation leaves them alone"


async def test_thresholds_the_program_sets_meanwhile_are_kept(thresholds: None) -> None:
    seen: list[tuple[int, int, int]] = []
    flow = _flow(seen, during=lambda: gc.set_threshold(800, 11, 12))
    await flow.start_many("watch", [{"i": i} for i in range(1000)])
    await flow.run()
    assert seen[0] == (50_000, 11, 12)
    assert gc.get_threshold() == (800, 11, 12)


async def test_collection_turned_off_stays_off(thresholds: None) -> None:
    gc.set_threshold(0, 11, 12)
    seen: list[tuple[int, int, int]] = []
    flow = _flow(seen)
    await flow.start_many("watch", [{"i": i} for i in range(1000)])
    await flow.run()
    assert set(seen) == {(0, 11, 12)}
    assert gc.get_threshold() == (0, 11, 12)
