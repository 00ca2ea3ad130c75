"""The smallest useful asyncflow script: one workflow, one side effect, one log line.

Running the script executes the workflows once, prints a RUN SUMMARY and exits; the runs are
kept in the backend (`file:.asyncflow` by default, or ASYNCFLOW_BACKEND, or `--backend URL`).

    python examples/cli.py run hello                       # hello, world
    python examples/cli.py run hello '{"name": "Ada"}'     # hello, Ada
    python examples/cli.py run hello --json                # the same, as JSON
    python examples/cli.py runs                            # every run so far, oldest first
    python examples/cli.py show RUN_ID                     # one run, step by step
"""

import sys

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def greet(c: Context, name: str) -> str:
    # The real world: runs once per run, however often the workflow is replayed.
    message = f"hello, {name}"
    print(message, file=sys.stderr)
    return message


@flow.workflow()
async def hello(c: Context, args: dict | None) -> str:
    message = await greet(c, (args or {}).get("name", "world"))
    await c.log(message)
    return message


if __name__ == "__main__":
    flow.cli()
