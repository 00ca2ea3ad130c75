"""The flow the dashboard tests look at (tests/test_dashboard*.py), in process or served by
`python tests/helpers/proc_dashboard_flow.py serve`.

`order` has a side effect retried once, two branches, a state change, an emitted event and a
wait for `approved` (with a deadline); `shipped` starts `notify`, the state `orders` starts
`audit`; `fragile` fails its first attempt in each process (so a retry succeeds); `nap`
sleeps an hour (to be cancelled).
"""

from __future__ import annotations

from typing import Any

import asyncflow
from asyncflow import Context, Retry

_failed: set[str] = set()  # (run id, what) pairs that failed once in this process


def _plain(fn: Any) -> Any:
    fn.__qualname__ = fn.__name__  # side effects are named by it: "charge", not "make_flow.<...>"
    return fn


def make_flow(backend: Any = None, **options: Any) -> asyncflow.Flow:
    flow = asyncflow.setup(backend, **options)

    @flow.sideeffect(retry=Retry(attempts=3, initial=0.01, jitter=0))
    @_plain
    async def charge(c: Context, amount: int) -> int:
        if (c.run_id, "charge") not in _failed:
            _failed.add((c.run_id, "charge"))
            raise ConnectionError("card network unreachable")
        return amount

    @flow.sideeffect()
    @_plain
    async def pack(c: Context, item: str) -> str:
        return f"packed {item}"

    @flow.sideeffect()
    @_plain
    async def check(c: Context) -> str:
        if (c.run_id, "check") not in _failed:
            _failed.add((c.run_id, "check"))
            raise RuntimeError("the disk is full")
        return "fine"

    @flow.workflow()
    async def order(c: Context, args: dict[str, Any] | None) -> dict[str, Any]:
        items = (args or {}).get("items", ["book", "pen"])
        await c.log(f"order of {len(items)} items")
        paid = await charge(c, 10 * len(items))
        packed = await c.map(pack, items)
        await c.set_state("orders", await c.get_state("orders", 0) + 1)
        await c.event("shipped", {"items": items})
        approval = await c.wait_event("approved", timeout=3600)
        await c.log(f"approved by {approval}")
        return {"paid": paid, "packed": packed, "approval": approval}

    @flow.workflow(trigger="shipped")
    async def notify(c: Context, args: Any) -> None:
        await c.log(f"shipped {args}")

    @flow.workflow(trigger=asyncflow.state_trigger("orders"))
    async def audit(c: Context, args: Any) -> Any:
        return args

    @flow.workflow()
    async def fragile(c: Context) -> str:
        return await check(c)

    @flow.workflow()
    async def nap(c: Context) -> None:
        await c.sleep(3600)

    return flow


flow = make_flow()

if __name__ == "__main__":
    flow.cli()
