"""The AWS Lambda handler (`asyncflow.aws_lambda`), fed realistic events in a fresh process
that imports the handler module by its dotted name, as Lambda's runtime does.

tests/helpers/proc_lambda_app.py is the handler module, tests/helpers/proc_lambda_driver.py the
runtime stand-in, tests/helpers/lambda_events.py the events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lambda_events import rest, scheduled, sqs, url

import asyncflow
import asyncflow.aws_lambda

if TYPE_CHECKING:
    from conftest import Aws

TESTS = Path(__file__).resolve().parent / "helpers"  # the handler modules, the driver


class Lambda:
    """One container: a process that imports the handler once and gets several events."""

    def __init__(self, tmp_path: Path, token: str | None = None) -> None:
        self.store = tmp_path / "store"
        self.token = token

    def __call__(self, *events: Any, remaining_ms: int = 60_000) -> list[Any]:
        items = [
            e if isinstance(e, tuple) else (e, remaining_ms)  # (event, remaining_ms)
            for e in events
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "TEST_STORE": str(self.store),
            "TEST_TOKEN": self.token or "",
            "AWS_LAMBDA_FUNCTION_NAME": "asyncflow-test",
        }
        proc = subprocess.run(
            [sys.executable, str(TESTS / "proc_lambda_driver.py"), "proc_lambda_app.handler"],
            input=json.dumps([{"event": e, "remaining_ms": ms} for e, ms in items]),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        self.stderr = proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        self.report = lines[-1]["report"]
        return lines[:-1]


@pytest.fixture
def lam(tmp_path: Path) -> Lambda:
    return Lambda(tmp_path)


def ok(answer: dict[str, Any]) -> Any:
    assert "ok" in answer, answer
    return answer["ok"]


def http(answer: dict[str, Any]) -> tuple[int, Any]:
    response = ok(answer)
    assert response["headers"]["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.procs
def test_every_event_kind_on_one_warm_container(lam: Lambda) -> None:
    answers = lam(
        url({"trigger": "greet", "args": {"name": "url"}}),
        rest({"trigger": "wait"}, b64=True),
        scheduled(),
        {"trigger": "greet", "args": {"name": "direct"}},
        {"trigger_name": "greet"},
        url(method="GET", path="/runs", query="status=succeeded"),
        {},
        {**scheduled(), "detail-type": "Order", "detail": {"trigger": "greet", "args": {}}},
    )
    status, body = http(answers[0])
    assert status == 200
    assert [(r["workflow"], r["status"], r["result"]) for r in body] == [
        ("greet", "succeeded", {"name": "url"})
    ]
    assert body[0]["logs"] == ["hello, url"]
    status, body = http(answers[1])
    assert (status, [(r["workflow"], r["status"]) for r in body]) == (200, [("wait", "paused")])
    # The schedule resumes the paused run.
    assert [(r["workflow"], r["status"]) for r in ok(answers[2])] == [("wait", "succeeded")]
    assert [r["result"] for r in ok(answers[3])] == [{"name": "direct"}]
    assert [r["result"] for r in ok(answers[4])] == [{"name": "world"}]
    status, runs = http(answers[5])
    assert status == 200
    assert sorted(r["workflow"] for r in runs) == ["greet", "greet", "greet", "wait"]
    assert "steps" not in runs[0]
    assert ok(answers[6]) == []
    assert [r["result"] for r in ok(answers[7])] == [{"name": "world"}]
    # One event loop thread opened the backend once for all eight invocations, and nothing
    # closed it between them.
    assert lam.report == {"opened": 1, "closed": 0, "open_threads": 1, "main_thread": False}


@pytest.mark.procs
def test_a_function_url_shows_one_run(lam: Lambda) -> None:
    (first,) = lam(url({"trigger": "wait"}))
    _, body = http(first)
    run_id = body[0]["run_id"]
    found, missing, listed = lam(
        rest(method="GET", path=f"/runs/{run_id}"),
        url(method="GET", path="/runs/nope"),
        rest(method="GET", path="/runs", query={"status": ["succeeded", "paused"]}),
    )
    assert [r["run_id"] for r in http(listed)[1]] == [run_id]
    status, run = http(found)
    assert (status, run["run_id"], run["status"]) == (200, run_id, "paused")
    assert [s["kind"] for s in run["steps"]] == ["log", "pause"]
    status, body = http(missing)
    assert (status, body) == (404, {"error": "no run with id 'nope'"})


@pytest.mark.procs
def test_bad_http_requests_get_400_404_405_413_and_change_nothing(lam: Lambda) -> None:
    answers = lam(
        url("{not json"),
        url([1, 2]),
        url({"trigger": "nope"}),
        url({"event": "approved", "trigger": "greet"}),
        url({"trigger": "greet", "argz": 1}),
        {**url("%%%"), "isBase64Encoded": True},
        url(method="PUT", path="/"),  # GET / is the dashboard
        url({"trigger": "greet"}, path="/nowhere"),
        url({"trigger": "greet", "args": "x" * 2_000_000}),
        url(method="GET", path="/runs"),
    )
    codes = [http(a)[0] for a in answers]
    assert codes == [400, 400, 400, 400, 400, 400, 405, 404, 413, 200]
    messages = [http(a)[1]["error"] for a in answers[:-1]]
    assert "not valid JSON" in messages[0]
    assert "must be a JSON object, not an array" in messages[1]
    assert "no workflow is bound to trigger 'nope'" in messages[2]
    assert "'greet'" in messages[2]  # the known triggers are listed
    assert "give 'trigger' or 'event', not both" in messages[3]
    assert "unknown field(s) 'argz'" in messages[4]
    assert "base64" in messages[5]
    assert ok(answers[6])["headers"]["allow"] == "POST"
    assert http(answers[-1])[1] == []  # none of them stored anything


@pytest.mark.procs
def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    lam = Lambda(tmp_path, token="s3cret")
    answers = lam(
        url({"trigger": "greet"}),
        url({"trigger": "greet"}, headers={"authorization": "Bearer wrong"}),
        rest({"trigger": "greet"}, headers={"Authorization": "Bearer s3cret"}),
        url({"trigger": "greet"}, headers={"authorization": "Bearer s3cret"}),
        url(method="GET", path="/healthz"),
        # AWS's own events are authorized by IAM, not by the token.
        {"trigger": "greet"},
    )
    assert [http(a)[0] for a in answers[:5]] == [401, 401, 200, 200, 200]
    assert ok(answers[0])["headers"]["www-authenticate"] == "Bearer"
    assert len(ok(answers[5])) == 1


@pytest.mark.procs
def test_an_unexpected_failure_is_a_500_with_an_error_id_and_no_details(lam: Lambda) -> None:
    lam(url({"trigger": "wait"}))
    folder = Path(asyncflow.FileBackend(lam.store).locate(("active", "x"))).parent
    shutil.rmtree(folder)
    folder.write_bytes(b"a file where the folder of runs should be")
    (answer,) = lam(url({}))
    status, body = http(answer)
    assert status == 500
    assert set(body) == {"error", "error_id"}
    assert body["error"] == "internal error"
    assert str(folder) not in json.dumps(body)
    # The details are in the function's log, under that id.
    assert body["error_id"] in lam.stderr
    assert str(folder) in lam.stderr
    assert folder.read_bytes() == b"a file where the folder of runs should be"  # left as found


@pytest.mark.procs
def test_a_damaged_record_is_reported_in_the_answer_and_the_other_runs_advance(
    lam: Lambda,
) -> None:
    (first,) = lam(url({"trigger": "wait"}))
    run_id = http(first)[1][0]["run_id"]
    path = Path(asyncflow.FileBackend(lam.store).locate(("active", run_id)))
    path.write_bytes(b"\x00 not a record")
    (answer,) = lam(url({"trigger": "wait"}))
    status, body = http(answer)
    assert status == 200
    assert [(r["status"], r["run_id"] == run_id) for r in body] == [
        ("paused", False),
        ("damaged", True),
    ]
    assert str(path) in body[1]["error"]
    assert path.read_bytes() == b"\x00 not a record"  # left as found


@pytest.mark.procs
def test_sqs_reports_only_the_failed_messages(lam: Lambda) -> None:
    batch = sqs(
        {"trigger": "greet", "args": {"name": "sqs"}},
        "{broken",
        {"trigger": "nope"},
        {"trigger": "wait"},
        {"event": "shipped", "args": "box"},
        [1],
    )
    answer, listing = lam(batch, url(method="GET", path="/runs"))
    assert ok(answer) == {"batchItemFailures": [{"itemIdentifier": m} for m in ("m1", "m2", "m5")]}
    runs = {r["workflow"]: r for r in http(listing)[1]}
    assert set(runs) == {"greet", "wait", "on_shipped"}
    assert runs["on_shipped"]["result"] == "box"
    assert runs["greet"]["status"] == "succeeded"
    assert runs["greet"]["result"] == {"name": "sqs"}
    assert runs["wait"]["status"] == "paused"


@pytest.mark.procs
def test_events_over_a_function_url_a_direct_invocation_and_sqs(lam: Lambda) -> None:
    started, woken, direct, batch, again = lam(
        {"trigger": "approve"},
        url({"event": "approved", "args": {"by": "ops"}}),
        {"event": "shipped", "args": 1},
        sqs({"trigger": "greet", "args": {"name": "once"}}, {"event": "shipped", "args": 2}),
        # SQS delivers a message at least once: the same message again starts nothing more.
        sqs({"trigger": "greet", "args": {"name": "once"}}),
    )
    [run] = ok(started)
    assert (run["workflow"], run["status"]) == ("approve", "paused")
    status, body = http(woken)
    assert status == 200
    assert [(r["run_id"], r["status"], r["result"]) for r in body] == [
        (run["run_id"], "succeeded", {"by": "ops"})
    ]
    assert [(r["workflow"], r["result"]) for r in ok(direct)] == [("on_shipped", 1)]
    assert ok(batch) == ok(again) == {"batchItemFailures": []}
    (listing,) = lam(url(method="GET", path="/runs"))
    results = sorted((r["workflow"], json.dumps(r["result"])) for r in http(listing)[1])
    assert results == [
        ("approve", '{"by": "ops"}'),
        ("greet", '{"name": "once"}'),
        ("on_shipped", "1"),
        ("on_shipped", "2"),
    ]


@pytest.mark.procs
def test_an_sqs_event_message_delivered_twice_starts_and_wakes_nothing_twice(
    lam: Lambda,
) -> None:
    # SQS delivers a message at least once: its id is the event's idempotency key, as it is
    # for a trigger message, here across two containers.
    messages = ({"event": "shipped", "args": 3}, {"event": "approved", "args": {"by": "sqs"}})
    first, batch = lam({"trigger": "approve"}, sqs(*messages))
    second, again = lam({"trigger": "approve"}, sqs(*messages))
    assert ok(batch) == ok(again) == {"batchItemFailures": []}
    (listing,) = lam(url(method="GET", path="/runs"))
    runs = sorted(
        (r["workflow"], r["status"], json.dumps(r["result"]), r["run_id"])
        for r in http(listing)[1]
    )
    [(one,), (two,)] = ok(first), ok(second)
    # The run that waited before the message got it; the one that began waiting after the
    # message was first delivered still waits: a redelivery is not a new event.
    assert [r[:3] for r in runs] == [
        ("approve", "paused", "null"),
        ("approve", "succeeded", '{"by": "sqs"}'),
        ("on_shipped", "succeeded", "3"),
    ]
    assert {r[3] for r in runs if r[0] == "approve"} == {one["run_id"], two["run_id"]}
    assert [r[3] for r in runs if r[1] == "succeeded" and r[0] == "approve"] == [one["run_id"]]


def test_sqs_reports_a_message_whose_runs_could_not_be_stored() -> None:
    class Refuses(asyncflow.MemoryBackend):
        async def write(self, key: Any, data: bytes, **kwargs: Any) -> str:
            if b"poison" in data:
                raise asyncflow.BackendError("storage refused the write")
            return await super().write(key, data, **kwargs)

    flow = asyncflow.setup(Refuses())

    @flow.workflow()
    async def take(c: asyncflow.Context, args: Any) -> Any:
        return args

    handler = asyncflow.aws_lambda.handler(flow)
    try:
        batch = sqs({"trigger": "take", "args": "ok"}, {"trigger": "take", "args": "poison"})
        assert handler(batch, None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
        runs = handler(url(method="GET", path="/runs"), None)
        assert [r["result"] for r in json.loads(runs["body"])] == ["ok"]
    finally:
        handler.close()


@pytest.mark.procs
def test_direct_invocations_raise_on_bad_input(lam: Lambda) -> None:
    answers = lam(
        {"trigger": "nope"},
        {"foo": 1},
        ["trigger"],
        {"trigger": "greet"},
        {**scheduled(), "detail": {"trigger": 1}},
    )
    assert answers[0]["raised"].startswith("UnknownTriggerError: no workflow is bound")
    assert answers[1]["raised"].startswith("UsageError: unrecognised Lambda event: unknown field")
    assert answers[2]["raised"].startswith("UsageError: unrecognised Lambda event")
    assert ok(answers[3])[0]["status"] == "succeeded"
    assert answers[4]["raised"].startswith("UsageError: unrecognised EventBridge detail")


@pytest.mark.procs
def test_no_run_starts_when_too_little_time_is_left(lam: Lambda) -> None:
    # `slow` takes "a minute" (it moves the flow's clock); the safety margin is 1 s and
    # max_concurrency 1, so each invocation with 5 s left starts one run only.
    answers = lam(
        ({"trigger": "slow", "args": 1}, 5_000),
        ({"trigger": "slow", "args": 2}, 5_000),  # the new run goes first; run 1 waits
        (scheduled(), 500),  # less than the margin: nothing starts
        (url({"trigger": "slow", "args": 3}), 900),  # stored, not started
        (url(method="GET", path="/runs"), 60_000),
        (scheduled(), 60_000),
    )
    assert [r["status"] for r in ok(answers[0])] == ["paused"]
    assert [r["status"] for r in ok(answers[1])] == ["paused"]
    assert ok(answers[2]) == []
    assert http(answers[3]) == (200, [])
    runs = http(answers[4])[1]
    assert [(r["args"], r["status"]) for r in runs] == [
        (1, "paused"),
        (2, "paused"),
        (3, "pending"),
    ]
    # Given time, every run that was left goes on from where it was.
    last = ok(answers[5])
    assert sorted((r["result"], r["status"]) for r in last if r["status"] != "paused") == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    assert [r["status"] for r in last if r["run_id"] == runs[2]["run_id"]] == ["paused"]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_handler_runs_on_either_library_and_closes(loop: str) -> None:
    backend = asyncflow.MemoryBackend()
    flow = asyncflow.setup(backend)

    @flow.workflow()
    async def hello(c: asyncflow.Context) -> str:
        return "hi"

    handler = asyncflow.aws_lambda.handler(flow, loop=loop)  # type: ignore[arg-type]
    assert handler({"trigger": "hello"}, None)[0]["result"] == "hi"
    status = handler(url(method="GET", path="/runs"), None)["statusCode"]
    assert status == 200
    handler.close()
    handler.close()  # idempotent
    # Usable again after close: a new loop starts.
    assert len(handler(url(method="GET", path="/runs"), None)["body"]) > 2
    handler.close()


def test_a_backend_that_cannot_open_fails_the_call_and_is_retried() -> None:
    class Flaky(asyncflow.MemoryBackend):
        opened = 0

        async def open(self) -> None:
            self.opened += 1
            if self.opened == 1:
                raise asyncflow.BackendError("bucket unreachable")

    backend = Flaky()
    flow = asyncflow.setup(backend)

    @flow.workflow()
    async def hello(c: asyncflow.Context) -> str:
        return "hi"

    handler = asyncflow.aws_lambda.handler(flow)
    with pytest.raises(asyncflow.BackendError, match="bucket unreachable"):
        handler({"trigger": "hello"}, None)
    try:
        assert handler({"trigger": "hello"}, None)[0]["result"] == "hi"
        assert backend.opened == 2
    finally:
        handler.close()


def test_the_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCFLOW_TOKEN", "from-env")
    handler = asyncflow.aws_lambda.handler(asyncflow.setup("memory:"))
    try:
        assert handler(url(method="GET", path="/runs"), None)["statusCode"] == 401
        auth = {"authorization": "Bearer from-env"}
        assert handler(url(method="GET", path="/runs", headers=auth), None)["statusCode"] == 200
    finally:
        handler.close()


def test_inside_lambda_the_default_folder_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.delenv("ASYNCFLOW_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(asyncflow.ConfigError, match=r"set ASYNCFLOW_BACKEND=s3://"):
        asyncflow.aws_lambda.handler(asyncflow.setup())
    # Configured either way, it is accepted.
    asyncflow.aws_lambda.handler(asyncflow.setup("memory:"))
    monkeypatch.setenv("ASYNCFLOW_BACKEND", f"file:{tmp_path}")
    asyncflow.aws_lambda.handler(asyncflow.setup())
    # Outside Lambda the default folder is fine.
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    monkeypatch.delenv("ASYNCFLOW_BACKEND")
    asyncflow.aws_lambda.handler(asyncflow.setup())


def test_bad_settings_are_refused() -> None:
    flow = asyncflow.setup("memory:")
    # The handler's options are settings: ConfigError (asyncflow._validate's rule).
    with pytest.raises(asyncflow.ConfigError, match="safety_margin"):
        asyncflow.aws_lambda.handler(flow, safety_margin=-1)
    with pytest.raises(asyncflow.ConfigError, match="token"):
        asyncflow.aws_lambda.handler(flow, token="")
    with pytest.raises(asyncflow.ConfigError, match="max_body_size"):
        asyncflow.aws_lambda.handler(flow, max_body_size=0)
    with pytest.raises(asyncflow.ConfigError, match="loop"):
        asyncflow.aws_lambda.handler(flow, loop="curio")  # type: ignore[arg-type]


# -- Flow.run(time_limit=...), which the handler uses ------------------------------------------


@pytest.mark.anyio
async def test_time_limit_starts_no_run_past_it(make_flow: Any, clock: Any) -> None:
    flow = make_flow(max_concurrency=1)

    @flow.sideeffect()
    async def work(c: asyncflow.Context, minutes: int) -> int:
        clock.advance(60 * minutes)
        return minutes

    @flow.workflow()
    async def job(c: asyncflow.Context, minutes: int) -> int:
        done = await work(c, minutes)
        await c.pause_once()
        return done

    for minutes in (5, 0, 0):
        await flow.start("job", minutes)
    # The new run goes first, then the 5-minute one; after it the limit is past.
    first = await flow.run("job", 0, time_limit=60)
    assert [(r.status, r.logs) for r in first] == [("paused", []), ("paused", [])]
    assert len(await flow.list_runs("pending")) == 2
    # No time at all: the new run is stored as it is, nothing starts.
    assert await flow.run("job", 0, time_limit=0) == []
    pending = await flow.list_runs("pending")
    assert [r.args for r in pending] == [0, 0, 0]
    assert all(r.steps == () for r in pending)
    rest = await flow.run()
    assert sorted(r.status for r in rest) == ["paused"] * 3 + ["succeeded"] * 2


@pytest.mark.procs
@pytest.mark.parametrize("kind", ["s3", "dynamodb"])
def test_a_deployed_handler_keeps_its_runs_in_the_aws_store(kind: str, aws: Aws) -> None:
    """As the SAM template deploys it: ASYNCFLOW_BACKEND names the store; moto stands in for
    AWS. A second container (process) resumes what the first one started."""
    store = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "AWS_LAMBDA_FUNCTION_NAME": "asyncflow-test",
        "ASYNCFLOW_BACKEND": store,
        "AWS_ENDPOINT_URL": aws.endpoint,
    }

    def container(*events: Any) -> list[Any]:
        proc = subprocess.run(
            [sys.executable, str(TESTS / "proc_lambda_driver.py"), "proc_lambda_s3_app.handler"],
            input=json.dumps([{"event": e} for e in events]),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    started, report = container(url({"trigger": "watch", "args": {"item": "lemon"}}))
    assert report == {"report": {"backend": "S3Backend" if kind == "s3" else "DynamoDBBackend"}}
    status, [run] = http(started)
    assert (status, run["status"]) == (200, "paused")
    resumed, listing, _ = container(scheduled(), url(method="GET", path="/runs"))
    assert [(r["run_id"], r["status"], r["result"]) for r in ok(resumed)] == [
        (run["run_id"], "succeeded", 120)
    ]
    assert [r["status"] for r in http(listing)[1]] == ["succeeded"]
