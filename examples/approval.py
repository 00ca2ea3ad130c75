"""A deploy that waits for an approval: `c.wait_event` suspends the run until someone emits
`承認:<run_id>` ("approval"), with no replay while it waits and no server.

    python examples/approval.py run デプロイ '{"version": "1.2.0"}'   # paused: waits for approval
    python examples/approval.py runs                                  # ... event 承認:RUN_ID
    python examples/approval.py emit 承認:RUN_ID '{"承認者": "佐藤"}'  # approved: it deploys now

Without an approval within a day the deploy gives up (`asyncflow.WaitTimeout`).
"""

import sys

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def 通知(c: Context, message: str) -> None:
    # A real script would post to a chat channel here; it happens once per run.
    print(message, file=sys.stderr)


@flow.sideeffect()
async def 本番反映(c: Context, version: str) -> str:
    # A real script would call the deploy API here.
    return f"{version} を本番に反映しました"


@flow.workflow()
async def デプロイ(c: Context, args: dict) -> str:
    version = args["version"]
    await 通知(c, f"{version} のデプロイ承認待ち: emit 承認:{c.run_id}")
    await c.log(f"承認待ち: {version}")
    try:
        approval = await c.wait_event(f"承認:{c.run_id}", timeout=24 * 3600)
    except asyncflow.WaitTimeout:
        await c.log("承認されませんでした: 中止")
        return "中止"
    await c.log(f"{approval['承認者']} さんが承認")
    result = await 本番反映(c, version)
    await c.log(result)
    return result


if __name__ == "__main__":
    flow.cli()
