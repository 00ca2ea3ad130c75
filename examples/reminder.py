"""A task with a deadline: a reminder before it, a last warning when it passes.

`c.sleep_until` suspends the run durably: invocations before the time skip it without
replaying it (`runs` shows the time it waits for; `flow.next_wakeup()` tells a scheduler when
to call next), and the first invocation after the time resumes it. Marking the task done is an
event (`完了:<task>`) that the run waits for, with the deadline as its timeout.

    python examples/reminder.py run 締め切り \
        '{"task": "レポート", "deadline": "2030-01-31T17:00:00+09:00", "remind_before_s": 3600}'
    python examples/reminder.py runs                    # WAITING FOR: time 2030-01-31T16:00...
    python examples/reminder.py run                     # after 16:00: the reminder
    python examples/reminder.py emit 完了:レポート       # done in time

The run waits for `完了:レポート` only from the reminder on: emitted before, while the run still
sleeps, the event reaches nobody (events are not kept), and `emit` says that nothing took it.
"""

import sys
from datetime import datetime, timedelta

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def 通知(c: Context, message: str) -> None:
    # A real script would send a push notification here; once per run.
    print(message, file=sys.stderr)


@flow.workflow()
async def 締め切り(c: Context, args: dict) -> str:
    task = args["task"]
    deadline = datetime.fromisoformat(args["deadline"])
    await c.log(f"{task}: 締め切り {deadline.isoformat()}")
    await c.sleep_until(deadline - timedelta(seconds=args.get("remind_before_s", 3600)))
    await 通知(c, f"リマインダー: {task} の締め切りが近づいています")
    await c.log(f"{task}: リマインド")
    left = (deadline - await c.now()).total_seconds()
    try:
        await c.wait_event(f"完了:{task}", timeout=max(left, 0))
    except asyncflow.WaitTimeout:
        await 通知(c, f"{task} の締め切りを過ぎました")
        await c.log(f"{task}: 締め切り超過")
        return "超過"
    await c.log(f"{task}: 完了")
    return "完了"


if __name__ == "__main__":
    flow.cli()
