"""The watched-item flow of issue 14: each invocation, one side effect, then a pause."""

from __future__ import annotations

from typing import Any

import asyncflow
from asyncflow import Context


def watch_flow(
    backend: asyncflow.Backend | str, calls: list[int], **options: Any
) -> asyncflow.Flow:
    """A flow whose ``watch`` workflow records ``args["i"]`` in ``calls`` through one side
    effect per invocation, then pauses, forever."""
    flow = asyncflow.setup(backend, **options)

    @flow.sideeffect()
    async def io(c: Context, i: int) -> int:
        calls.append(i)
        return i

    @flow.workflow()
    async def watch(c: Context, args: dict[str, int]) -> None:
        while True:
            await io(c, args["i"])
            await c.pause_once()

    return flow
