"""A flow script driven by tests/test_isolation_cli.py: `wait` pauses once, `boom` fails on
a ZeroDivisionError, `echo` returns its args; `extra` exists only when ASYNCFLOW_TEST_EXTRA
is set (another version of the script). The backend is ASYNCFLOW_BACKEND."""

import os

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.workflow()
async def wait(c: Context) -> str:
    await c.pause_once()
    return "waited"


def divide(n: int) -> float:
    return n / 0


@flow.workflow()
async def boom(c: Context) -> float:
    return divide(1)


@flow.workflow()
async def echo(c: Context, args: object) -> object:
    return args


if os.environ.get("ASYNCFLOW_TEST_EXTRA"):

    @flow.workflow()
    async def extra(c: Context) -> None:
        raise ValueError("extra fails")


if __name__ == "__main__":
    flow.cli()
