"""The smallest useful asyncflow script: one workflow, one side effect, one log line; and
two workflows chained by an event.

Running the script executes the workflows once, prints a RUN SUMMARY and exits; the runs are
kept in the backend (`file:.asyncflow` by default, or ASYNCFLOW_BACKEND, or `--backend URL`).

    python examples/cli.py run hello                       # hello, world
    python examples/cli.py run hello '{"name": "Ada"}'     # hello, Ada
    python examples/cli.py run hello --json                # the same, as JSON
    python examples/cli.py runs                            # every run so far, oldest first
    python examples/cli.py show RUN_ID                     # one run, step by step
    python examples/cli.py run 処理1                        # 処理1 emits event1: 処理2 runs too
    python examples/cli.py emit event1 '{"from": "外"}'     # an event from outside
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


@flow.workflow()
async def 処理1(c: Context) -> None:
    await c.log("処理1: event1 を発行")
    # Handled in this same invocation: 処理2 runs before the command returns.
    await c.event("event1", {"from": "処理1"})


@flow.workflow(trigger=asyncflow.event_trigger("event1"))
async def 処理2(c: Context, args: dict) -> None:
    await c.log(f"処理2: event1 を受信 ({args['from']} から)")


if __name__ == "__main__":
    flow.cli()
