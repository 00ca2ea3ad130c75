"""Watching prices over HTTP: the price watcher of watch_price.py, fetching real prices.

`値段を取得` ("get the price") asks a price service with httpx; the answer is recorded, so a
replay never asks again. The script brings a tiny price service of its own (every request for
an item answers the next of 200, 300, 100 yen), so it runs anywhere:

    python examples/watch_price_http.py price-service &          # on 127.0.0.1:8765

Then the same flow, three ways:

    # a command on your PC, one invocation per `run`
    python examples/watch_price_http.py run 買いたいもの追加 '{"item_name":"レモン","price":150}'
    python examples/watch_price_http.py run      # 300円: still paused
    python examples/watch_price_http.py run      # 100円: succeeded

    # a server (pip install 'asyncflow-durable[server]'), resuming due runs every 10 seconds
    python examples/watch_price_http.py serve --resume-every 10
    curl -X POST localhost:8000/runs -d '{"trigger": "買いたいもの追加",
         "args": {"item_name": "レモン", "price": 150}}'

    # AWS Lambda: deploy this file with deploy/template.yaml (Handler: watch_price_http.handler)

PRICE_SERVICE_URL points the watcher at another price service (default http://127.0.0.1:8765).
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import httpx

import asyncflow
import asyncflow.aws_lambda
from asyncflow import Context, SideEffectError

flow = asyncflow.setup()


@flow.sideeffect()
async def 値段を取得(c: Context, item_name: str) -> int:
    base = os.environ.get("PRICE_SERVICE_URL", "http://127.0.0.1:8765")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.get(f"/prices/{item_name}")
        response.raise_for_status()
        return int(response.json()["price"])


@flow.workflow(trigger="買いたいもの追加")
async def 買いたいもの追加(c: Context, args: dict) -> int:
    item_name, limit = args["item_name"], args["price"]
    await c.log(f"買いたいもの追加: {item_name}")
    attempt = 0
    while True:
        attempt += 1
        try:
            price = await 値段を取得(c, item_name)
        except SideEffectError as exc:
            # The service was down or said no: recorded as such, tried again next time.
            await c.log(f"{attempt}回目: 値段を取得できませんでした ({exc.type_name})")
            await c.pause_once()
            continue
        if price <= limit:
            await c.log(f"{attempt}回目: {item_name}は{price}円!")
            return price
        await c.log(f"{attempt}回目: {item_name}は{price}で買えませんでした")
        await c.pause_once()


# What Lambda calls (module `watch_price_http`, attribute `handler`).
handler = asyncflow.aws_lambda.handler(flow)


# -- the price service ------------------------------------------------------------------------

PRICES = [200, 300, 100]


class PriceService(BaseHTTPRequestHandler):
    """GET /prices/{item} answers {"item": ..., "price": ...}; GET /healthz says it is up."""

    asked: dict[str, int] = {}  # noqa: RUF012  (one service per process)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif self.path.startswith("/prices/"):
            item = unquote(self.path.removeprefix("/prices/"))
            n = self.asked[item] = self.asked.get(item, 0) + 1
            self._answer(200, {"item": item, "price": PRICES[(n - 1) % len(PRICES)]})
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the watcher's logs are the interesting ones


def serve_prices(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), PriceService)
    print(f"price service on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["price-service"]:
        port = sys.argv[sys.argv.index("--port") + 1] if "--port" in sys.argv else "8765"
        serve_prices(int(port))
    else:
        flow.cli()
