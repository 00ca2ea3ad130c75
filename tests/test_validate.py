"""One rule for bad values (asyncflow/_validate.py): settings raise ConfigError, calls raise
UsageError; each setting is checked once, where it is given, naming what is at fault."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncflow
import asyncflow.asgi
import asyncflow.aws_lambda
from asyncflow import Context


def _flow() -> asyncflow.Flow:
    return asyncflow.setup("memory:")


def _workflow_with_trigger(trigger: Any) -> None:
    @_flow().workflow(trigger=trigger)
    async def bad(c: Context) -> None:
        pass


def _sideeffect_with_timeout(timeout: Any) -> None:
    @_flow().sideeffect(timeout=timeout)
    async def slow(c: Context) -> None:
        pass


# Each: (what is at fault, as the message names it; a call giving a bad setting).
SETTINGS: list[tuple[str, Callable[[], object]]] = [
    ("max_concurrency", lambda: asyncflow.setup("memory:", max_concurrency=0)),
    ("max_concurrency", lambda: asyncflow.setup("memory:", max_concurrency=True)),
    ("unknown backend", lambda: asyncflow.setup("redis://x")),
    ("threads", lambda: asyncflow.FileBackend("x", threads=0)),
    ("lease_seconds", lambda: asyncflow.S3Backend("bucket", lease_seconds=math.inf)),
    ("lease_seconds", lambda: asyncflow.DynamoDBBackend("table", lease_seconds=-1)),
    ("max_attempts", lambda: asyncflow.S3Backend("bucket", max_attempts=0)),
    ("S3 bucket name", lambda: asyncflow.S3Backend("")),
    ("S3 bucket name", lambda: asyncflow.S3Backend("a/b")),
    ("DynamoDB table name", lambda: asyncflow.DynamoDBBackend("")),
    ("Retry(attempts=)", lambda: asyncflow.Retry(attempts=0)),
    ("event name", lambda: asyncflow.event_trigger("")),
    ("state name", lambda: asyncflow.state_trigger("")),
    ("cron expression", lambda: asyncflow.cron_trigger("* *")),
    ("trigger of workflow 'bad'", lambda: _workflow_with_trigger(3)),
    ("trigger of workflow 'bad'", lambda: _workflow_with_trigger("")),
    ("timeout of side effect", lambda: _sideeffect_with_timeout(0)),
    ("timeout of side effect", lambda: _sideeffect_with_timeout(float("nan"))),
    ("body_timeout", lambda: asyncflow.asgi.app(_flow(), body_timeout=0)),
    ("resume_every", lambda: asyncflow.asgi.app(_flow(), resume_every=-1)),
    ("resume_every", lambda: asyncflow.asgi.lifespan(_flow(), resume_every=0)),
    ("token", lambda: asyncflow.asgi.app(_flow(), token="")),
    ("max_body_size", lambda: asyncflow.asgi.app(_flow(), max_body_size=0)),
    ("safety_margin", lambda: asyncflow.aws_lambda.handler(_flow(), safety_margin=-1)),
    ("safety_margin", lambda: asyncflow.aws_lambda.handler(_flow(), safety_margin="1")),  # type: ignore[arg-type]
    ("loop", lambda: asyncflow.aws_lambda.handler(_flow(), loop="curio")),  # type: ignore[arg-type]
    ("token", lambda: asyncflow.aws_lambda.handler(_flow(), token="")),
]


@pytest.mark.parametrize(
    ("what", "give"), SETTINGS, ids=[f"{i}-{w}" for i, (w, _) in enumerate(SETTINGS)]
)
def test_a_bad_setting_is_a_config_error_naming_it(what: str, give: Callable[[], object]) -> None:
    with pytest.raises(asyncflow.ConfigError, match=re.escape(what)) as info:
        give()
    assert not isinstance(info.value, asyncflow.UsageError)


def test_a_bad_backend_url_in_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASYNCFLOW_BACKEND", "s3://")
    flow = asyncflow.setup()  # reported when the backend is first needed
    with pytest.raises(asyncflow.ConfigError, match=r"ASYNCFLOW_BACKEND: .*names no bucket"):
        flow.backend  # noqa: B018


def test_good_settings_at_their_bounds_are_taken(tmp_path: Path) -> None:
    assert asyncflow.setup("memory:", max_concurrency=1).max_concurrency == 1
    asyncflow.FileBackend(tmp_path, threads=1)
    asyncflow.aws_lambda.handler(_flow(), safety_margin=0)
    asyncflow.asgi.app(_flow(), resume_every=math.inf)  # never, in effect
    _sideeffect_with_timeout(math.inf)


@pytest.mark.anyio
async def test_a_bad_call_argument_stays_a_usage_error() -> None:
    flow = _flow()

    @flow.workflow()
    async def wf(c: Context) -> None:
        pass

    with pytest.raises(asyncflow.UsageError, match="idempotency key"):
        await flow.run("wf", key="")
    with pytest.raises(asyncflow.UsageError, match="event name"):
        await flow.emit("")
