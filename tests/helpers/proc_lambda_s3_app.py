"""A Lambda handler module as it is deployed: the flow's backend comes from ASYNCFLOW_BACKEND
(an ``s3://`` or ``dynamodb://`` URL), the endpoint from AWS_ENDPOINT_URL. Imported by
tests/helpers/proc_lambda_driver.py by its dotted name, as Lambda imports ``app.handler``.

`watch` pauses once, then asks its side effect for the price and returns it.
"""

from __future__ import annotations

from typing import Any

import asyncflow
import asyncflow.aws_lambda
from asyncflow import Context

flow = asyncflow.setup()


@flow.sideeffect()
async def fetch_price(c: Context, item: str) -> int:
    return {"lemon": 120}.get(item, 999)


@flow.workflow()
async def watch(c: Context, args: Any) -> int:
    await c.pause_once()
    return await fetch_price(c, args["item"])


handler = asyncflow.aws_lambda.handler(flow)


def report() -> dict[str, Any]:
    return {"backend": type(flow.backend).__name__}
