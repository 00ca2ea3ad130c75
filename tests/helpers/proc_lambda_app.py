"""A flow script with a Lambda handler, imported by tests/helpers/proc_lambda_driver.py by its
dotted name the way Lambda's Python runtime imports a handler module.

`greet` succeeds, `wait` pauses once, `boom` fails, `slow` moves the flow's clock on by a
minute (standing in for a run that takes long) and pauses once, `approve` waits for the event
`approved`, `on_shipped` runs on the event `shipped`. The backend counts how often
it is opened and closed, and on which threads, so that tests can see warm invocations reuse
it. TEST_STORE names its folder; TEST_TOKEN, if set, is the handler's token.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import asyncflow
import asyncflow.aws_lambda
from asyncflow import Context
from asyncflow.testing import MockClock


class CountingBackend(asyncflow.FileBackend):
    opened = 0
    closed = 0
    threads: set[int] = set()  # noqa: RUF012  (one backend per process)

    async def open(self) -> None:
        type(self).opened += 1
        type(self).threads.add(threading.get_ident())
        await super().open()

    async def aclose(self) -> None:
        type(self).closed += 1
        await super().aclose()


clock = MockClock()
flow = asyncflow.setup(CountingBackend(os.environ["TEST_STORE"]), clock=clock, max_concurrency=1)


@flow.workflow()
async def greet(c: Context, args: Any) -> dict[str, Any]:
    name = (args or {}).get("name", "world")
    await c.log(f"hello, {name}")
    return {"name": name}


@flow.workflow()
async def wait(c: Context) -> None:
    await c.log("waiting")
    await c.pause_once()
    await c.log("done waiting")


@flow.workflow()
async def boom(c: Context) -> None:
    raise ValueError("kaboom")


@flow.sideeffect()
async def take_a_minute(c: Context) -> None:
    clock.advance(60)


@flow.workflow()
async def slow(c: Context, args: Any) -> Any:
    await take_a_minute(c)
    await c.pause_once()
    return args


@flow.workflow()
async def approve(c: Context) -> Any:
    return await c.wait_event("approved")


@flow.workflow(trigger=asyncflow.event_trigger("shipped"))
async def on_shipped(c: Context, args: Any) -> Any:
    return args


handler = asyncflow.aws_lambda.handler(
    flow, token=os.environ.get("TEST_TOKEN") or None, safety_margin=1.0
)


def report() -> dict[str, Any]:
    """What the driver prints after the last event."""
    return {
        "opened": CountingBackend.opened,
        "closed": CountingBackend.closed,
        "open_threads": len(CountingBackend.threads),
        "main_thread": threading.main_thread().ident in CountingBackend.threads,
    }
