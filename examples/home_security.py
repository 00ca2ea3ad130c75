"""Home security from shared state: workflows run when a state's value changes.

`外出` ("going out") and `帰宅` ("coming home") set the state `外出中` ("away"); a motion
sensor's event `モーションセンサー` records the latest motion in the state `最後の動き`. Two
workflows are bound to those states with `asyncflow.state_trigger` and receive
`{"old": ..., "new": ...}`: one switches the alarm on and off, one checks each motion. Every
chain runs within the one command that started it.

    python examples/home_security.py emit 外出                                # 警戒モード: オン
    python examples/home_security.py emit モーションセンサー '{"場所": "玄関"}'  # 侵入者を検知!
    python examples/home_security.py emit 帰宅                                # 警戒モード: オフ
    python examples/home_security.py emit モーションセンサー '{"場所": "居間"}'  # 在宅中: 異常なし
"""

import sys

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def 通報(c: Context, message: str) -> None:
    # A real script would text the owner here; once per detection, whatever the replays.
    print(message, file=sys.stderr)


@flow.workflow()
async def 外出(c: Context) -> None:
    await c.set_state("外出中", True)


@flow.workflow()
async def 帰宅(c: Context) -> None:
    await c.set_state("外出中", False)


@flow.workflow()
async def モーションセンサー(c: Context, args: dict) -> None:
    # The time makes every motion a change of the state, even at the same place.
    now = await c.now()
    await c.set_state("最後の動き", {"場所": args["場所"], "時刻": now.isoformat()})


@flow.workflow(trigger=asyncflow.state_trigger("外出中"))
async def 警戒モード(c: Context, args: dict) -> None:
    await c.log(f"警戒モード: {'オン' if args['new'] else 'オフ'}")


@flow.workflow(trigger=asyncflow.state_trigger("最後の動き"))
async def 侵入チェック(c: Context, args: dict) -> None:
    place = args["new"]["場所"]
    if await c.get_state("外出中", False):
        await 通報(c, f"侵入者を検知: {place}")
        await c.log(f"侵入者を検知: {place}")
    else:
        await c.log(f"在宅中の動き: {place} (異常なし)")


if __name__ == "__main__":
    flow.cli()
