"""Pause and resume: an endless loop that stops once per lap.

Shows `c.pause_once()`. The workflow is re-run from the top on every invocation; the record
of past pauses only moves the point where it stops, so the lap counter (a plain local
variable) is rebuilt by the replay and each invocation gets one lap further.

    python examples/infinite_loop.py run loop   # start: paused after "loop: 0週目開始"
    python examples/infinite_loop.py run        # resume: "0週目おわり", "1週目開始", paused
    python examples/infinite_loop.py run        # ... one more lap per invocation
    python examples/infinite_loop.py runs       # list the runs kept in ./.asyncflow

State lives in `file:.asyncflow` unless ASYNCFLOW_BACKEND or `--backend URL` says otherwise.
"""

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.workflow()
async def loop(c: Context) -> None:
    i = 0
    while True:
        await c.log(f"loop: {i}週目開始")
        await c.pause_once()
        await c.log(f"loop: {i}週目おわり")
        i += 1


if __name__ == "__main__":
    flow.cli()
