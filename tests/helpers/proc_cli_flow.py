"""A small flow script driven by tests/test_cli.py: imported and run in-process, or as
`python tests/helpers/proc_cli_flow.py ...`.

`greet` succeeds (a side effect, a log line, a result), `wait` pauses once, `boom` fails,
`nap` sleeps an hour, `listen` waits for the event `bell`, `flaky` fails unless
ASYNCFLOW_TEST_FIXED is set, `hang` creates the file
ASYNCFLOW_TEST_MARK names and then waits a minute in a side effect (for Ctrl-C).
The backend is the default one: ASYNCFLOW_BACKEND, else `file:.asyncflow`.
"""

import os

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def add(c: Context, a: int, b: int) -> int:
    return a + b


@flow.workflow()
async def greet(c: Context, args: dict | None) -> dict:
    name = (args or {}).get("name", "world")
    total = await add(c, 1, 2)
    await c.log(f"hello, {name}")
    return {"name": name, "total": total}


@flow.workflow()
async def wait(c: Context) -> None:
    await c.log("waiting")
    await c.pause_once()
    await c.log("done waiting")


@flow.workflow()
async def boom(c: Context) -> None:
    await c.log("about to fail")
    raise ValueError("kaboom")


@flow.workflow()
async def nap(c: Context) -> None:
    await c.sleep(3600)


@flow.workflow()
async def listen(c: Context) -> object:
    return await c.wait_event("bell")


@flow.sideeffect()
async def fragile(c: Context) -> str:
    if not os.environ.get("ASYNCFLOW_TEST_FIXED"):
        raise ConnectionError("not yet")
    return "fixed"


@flow.workflow()
async def flaky(c: Context) -> str:
    total = await add(c, 2, 3)
    return f"{await fragile(c)} {total}"


@flow.sideeffect()
async def block(c: Context) -> None:
    import anyio

    await anyio.Path(os.environ["ASYNCFLOW_TEST_MARK"]).touch()
    await anyio.sleep(60)


@flow.workflow()
async def hang(c: Context) -> None:
    await block(c)


if __name__ == "__main__":
    flow.cli()
