"""Serve a small flow with uvicorn, for tests/test_http_hardening.py: the token is "t", the
body timeout ASYNCFLOW_TEST_BODY_TIMEOUT seconds; the store is argv[2], the port argv[1]."""

import os
import sys

import uvicorn

import asyncflow
import asyncflow.asgi
from asyncflow import Context

flow = asyncflow.setup(f"file:{sys.argv[2]}")


@flow.workflow()
async def greet(c: Context, args: object) -> object:
    return args


if __name__ == "__main__":
    timeout = float(os.environ.get("ASYNCFLOW_TEST_BODY_TIMEOUT", "30"))
    app = asyncflow.asgi.app(flow, token="t", body_timeout=timeout)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
