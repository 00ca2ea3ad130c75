"""Comparing prices: ask every shop at once, retry a flaky one, give up on a silent one.

Triggering `値段比較` ("compare prices") asks each shop for an item's price concurrently, with
`c.map`: every shop is a branch with a journal of its own. `値段を取得` ("get the price")
stands in for each shop's API, with a retry policy and a timeout:

- 八百屋 (the greengrocer) answers 120 at once;
- スーパー (the supermarket) fails its first attempt with ConnectionError and answers 110
  when retried 0.1 s later (a short wait: slept in the invocation);
- コンビニ (the corner shop) never answers: each attempt times out after 0.3 s, and after two
  attempts its branch gives up on it.

Then the run pauses once. The next invocation replays every branch from the journal, asks no
shop again, and buys at the cheapest.

    python examples/compare_prices.py run 値段比較 '{"item_name": "レモン"}'   # asks; paused
    python examples/compare_prices.py run                                      # buys; succeeded

Each attempt prints (on stderr) which shop it asks, so you can see that the replay asks none.
"""

import sys

import anyio

import asyncflow
from asyncflow import Context, Retry

flow = asyncflow.setup()

SHOPS = ["八百屋", "スーパー", "コンビニ"]
asked: dict[str, int] = {}  # attempts made in this process, to play each shop's part


@flow.sideeffect(
    retry=Retry(attempts=2, initial=0.1, jitter=0, on=(ConnectionError, TimeoutError)),
    timeout=0.3,
)
async def 値段を取得(c: Context, shop: str, item_name: str) -> int:
    asked[shop] = asked.get(shop, 0) + 1
    print(f"{shop}に{item_name}の値段を問い合わせ中 ({asked[shop]}回目)", file=sys.stderr)
    if shop == "スーパー" and asked[shop] == 1:
        raise ConnectionError("connection reset")
    if shop == "コンビニ":
        await anyio.sleep_forever()  # only the timeout ends it
    return {"八百屋": 120, "スーパー": 110}[shop]


@flow.workflow(trigger="値段比較")
async def 値段比較(c: Context, args: dict) -> dict:
    item_name = args["item_name"]

    async def 調べる(branch: Context, shop: str) -> int | None:
        try:
            price = await 値段を取得(branch, shop, item_name)
        except asyncflow.SideEffectError as exc:
            await branch.log(f"{shop}: 応答なし ({exc.type_name}, {exc.attempts}回)")
            return None
        await branch.log(f"{shop}: {price}円")
        return price

    prices = await c.map(調べる, SHOPS)
    await c.pause_once()  # the next invocation replays the branches: no shop is asked again
    answered = {shop: p for shop, p in zip(SHOPS, prices, strict=True) if p is not None}
    shop = min(answered, key=answered.__getitem__)
    await c.log(f"{shop}で{item_name}を{answered[shop]}円で買います")
    return {"shop": shop, "price": answered[shop]}


if __name__ == "__main__":
    flow.cli()
