"""Side effects and state: a loop that notifies you, exactly once per message.

Shows `@flow.sideeffect()` and `c.get_state` / `c.set_state`. The workflow is replayed from
the top on every invocation, yet each message is sent only once: a side effect runs on its
first call and replays its recorded outcome afterwards; `get_state` returns what it returned
the first time; `set_state` does nothing on replay.

    python examples/infinite_loop_with_sideeffect.py run loop   # start!, ...value is 1; paused
    python examples/infinite_loop_with_sideeffect.py run        # ...value is 2; paused
    python examples/infinite_loop_with_sideeffect.py run        # finish!; succeeded

Each invocation "sends" (prints, on stderr) only the messages that are new, while the RUN
SUMMARY shows the run's whole log. The counter is shared state ("loop_count"), so a second
`run loop` keeps counting from where the first one left it.
"""

import sys

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def send_message(c: Context, msg: str) -> None:
    """Stands in for a push notification to your phone."""
    text = f"sending message to your phone...:{msg}"
    print(text, file=sys.stderr)  # stderr keeps `run --json` output machine-readable
    await c.log(text)


@flow.workflow()
async def loop(c: Context) -> None:
    await send_message(c, "start!")
    for _ in range(2):
        value = await c.get_state("loop_count", 0) + 1
        await c.set_state("loop_count", value)
        await send_message(c, f"first loop... value is {value}")
        await c.pause_once()
    await send_message(c, "finish!")


if __name__ == "__main__":
    flow.cli()
