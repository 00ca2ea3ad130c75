"""Watching prices: pause and retry until an item is cheap enough, then notify.

Triggering `買いたいもの追加` ("add an item to buy") starts a run that fetches the price on
every invocation and pauses until the price is at or below the one given. `値段を取得`
("get the price") is a side effect standing in for an outside price service: it returns the
dummy prices 200, 300, 100 for the 1st, 2nd, 3rd attempt. The attempt number is a local
variable rebuilt by the replay, so every run sees the same sequence.

    python examples/watch_price.py run 買いたいもの追加 '{"item_name": "レモン", "price": 150}'
    python examples/watch_price.py run      # 2回目: still too expensive, paused
    python examples/watch_price.py run      # 3回目: レモンは100円! -> succeeded

Trigger it several times with different items and each invocation checks all of them.
"""

import asyncflow
from asyncflow import Context

flow = asyncflow.setup()

DUMMY_PRICES = [200, 300, 100]


@flow.sideeffect()
async def 値段を取得(c: Context, item_name: str, attempt: int) -> int:
    # A real script would call a shop's API here; its answer is recorded, never re-fetched.
    return DUMMY_PRICES[(attempt - 1) % len(DUMMY_PRICES)]


@flow.workflow(trigger="買いたいもの追加")
async def 買いたいもの追加(c: Context, args: dict) -> int:
    item_name, limit = args["item_name"], args["price"]
    await c.log(f"買いたいもの追加: {item_name}")
    attempt = 0
    while True:
        attempt += 1
        price = await 値段を取得(c, item_name, attempt)
        if price <= limit:
            await c.log(f"{attempt}回目: {item_name}は{price}円!")
            return price
        await c.log(f"{attempt}回目: {item_name}は{price}で買えませんでした")
        await c.pause_once()


if __name__ == "__main__":
    flow.cli()
