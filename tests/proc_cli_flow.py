"""A small flow script driven by tests/test_cli.py through `python tests/proc_cli_flow.py ...`.

`greet` succeeds (a side effect, a log line, a result), `wait` pauses once, `boom` fails.
The backend is the default one: ASYNCFLOW_BACKEND, else `file:.asyncflow`.
"""

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


if __name__ == "__main__":
    flow.cli()
