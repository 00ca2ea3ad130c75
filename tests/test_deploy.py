"""deploy/: the SAM template passes cfn-lint (with the SAM transform), and its app imports as
Lambda would import it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Aws

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TEMPLATE = DEPLOY / "template.yaml"
LINT = ["-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *LINT, str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.procs
def test_the_template_passes_cfn_lint() -> None:
    proc = cfn_lint(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.procs
def test_cfn_lint_would_catch_a_mistake(tmp_path: Path) -> None:
    # The check above is only worth something if cfn-lint reads the SAM resources.
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text()
    assert "!Ref TimeoutSeconds" in text
    broken.write_text(text.replace("!Ref TimeoutSeconds", "!Ref TimeoutSecondz"))
    shutil.copytree(DEPLOY / "app", tmp_path / "app")
    proc = cfn_lint(broken)
    assert proc.returncode != 0
    assert "E1020 'TimeoutSecondz'" in proc.stdout


def test_the_template_wires_the_function_to_the_bucket_schedule_and_url() -> None:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    assert not problems
    props: dict[str, Any] = template["Resources"]["FlowFunction"]["Properties"]
    env = props["Environment"]["Variables"]
    # The store's resources, policy and URL: the tests of the expanded template below.
    assert props["Events"]["Resume"]["Type"] == "Schedule"
    assert props["FunctionUrlConfig"] == {"AuthType": {"Ref": "UrlAuthType"}}
    assert template["Parameters"]["UrlAuthType"]["Default"] == "AWS_IAM"
    assert template["Resources"]["RunsBucket"]["DeletionPolicy"] == "Retain"
    # A public URL needs the token; with IAM auth the signature holds the Authorization header.
    rule = template["Rules"]["PublicUrlNeedsToken"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "UrlAuthType"}, "NONE"]}
    assert env["ASYNCFLOW_TOKEN"] == {
        "Fn::If": ["UseToken", {"Ref": "Token"}, {"Ref": "AWS::NoValue"}]
    }


def run_app(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, app;"
        "print(json.dumps(app.handler({'trigger': 'remind', 'args': {'text': 'hi'}}, None)))"
    )
    full = {k: v for k, v in os.environ.items() if k != "ASYNCFLOW_BACKEND"}
    full.update(env, AWS_LAMBDA_FUNCTION_NAME="asyncflow-app")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=DEPLOY / "app",
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.procs
def test_the_app_needs_a_backend_inside_lambda() -> None:
    proc = run_app()
    assert proc.returncode != 0
    assert "asyncflow.ConfigError: no backend configured for AWS Lambda" in proc.stderr
    assert "ASYNCFLOW_BACKEND=s3://" in proc.stderr


@pytest.mark.procs
def test_the_app_runs_with_a_backend(tmp_path: Path) -> None:
    proc = run_app(ASYNCFLOW_BACKEND=f"file:{tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert '"status": "paused"' in proc.stdout
    assert '"logs": ["noted: hi"]' in proc.stdout


# -- the template as SAM expands it ----------------------------------------------------------


def expand(**parameters: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template as CloudFormation gets it after ``sam package`` and the SAM transform
    (aws-sam-translator, what SAM runs at deploy time), and the resources that exist for
    ``parameters``: conditions evaluated, ``Fn::If`` resolved."""
    from cfnlint.decode import decode
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:  # the template names none; SAM would ask IAM for their ARNs
        def load(self) -> dict[str, str]:
            return {}

    template, problems = decode(str(TEMPLATE))
    assert not problems
    # `sam package` uploads app/ and puts its S3 location here.
    template["Resources"]["FlowFunction"]["Properties"]["CodeUri"] = "s3://bucket/app.zip"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        out = transform(json.loads(json.dumps(template)), parameters, NoManagedPolicies())
    values = {k: v.get("Default") for k, v in out["Parameters"].items()} | parameters

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return resolve(yes if holds(name) else no)
            items = {k: resolve(v) for k, v in node.items()}
            return {k: v for k, v in items.items() if v != NO_VALUE}
        if isinstance(node, list):
            return [r for r in map(resolve, node) if r != NO_VALUE]
        return node

    def holds(condition: str) -> bool:
        return bool(value(out["Conditions"][condition]))

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return str(values[node["Ref"]])
        if isinstance(node, dict) and "Fn::Equals" in node:
            a, b = node["Fn::Equals"]
            return value(a) == value(b)
        if isinstance(node, dict) and "Fn::Not" in node:
            return not value(node["Fn::Not"][0])
        if isinstance(node, dict) and "Condition" in node:
            return holds(node["Condition"])
        assert isinstance(node, str | int), node
        return str(node)

    resources = {
        name: resolve(resource)
        for name, resource in out["Resources"].items()
        if "Condition" not in resource or holds(resource["Condition"])
    }
    return out, resources


def refs(node: Any) -> set[str]:
    """The names a piece of template refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    import re

    if isinstance(node, dict):
        found = set()
        if "Ref" in node:
            found.add(node["Ref"])
        if "Fn::GetAtt" in node:
            found.add(node["Fn::GetAtt"][0])
        if "Fn::Sub" in node:
            sub = node["Fn::Sub"]
            text, names = (sub, {}) if isinstance(sub, str) else sub
            found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} - set(names)
        return found | {n for v in node.values() for n in refs(v)}
    if isinstance(node, list):
        return {n for v in node for n in refs(v)}
    return set()


NO_VALUE = {"Ref": "AWS::NoValue"}
PUBLIC = {"UrlAuthType": "NONE", "Token": "s3cr3t"}


@pytest.mark.parametrize("shards", ["1", "8"])
@pytest.mark.parametrize("store", ["S3", "DynamoDB"])
@pytest.mark.parametrize("auth", ["AWS_IAM", "NONE"])
def test_the_expanded_template_refers_only_to_what_exists(
    store: str, auth: str, shards: str
) -> None:
    out, resources = expand(Store=store, UrlAuthType=auth, Token="s3cr3t", Shards=shards)
    known = set(resources) | set(out["Parameters"]) | {"AWS::Partition", "AWS::Region"}
    known |= {"AWS::AccountId", "AWS::NoValue", "AWS::StackName", "AWS::URLSuffix"}
    assert refs(resources) <= known, refs(resources) - known


def public_permissions(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(
        (r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"),
        key=lambda p: (str(p["Action"]), str(p["Principal"])),
    )


def test_a_public_url_may_be_invoked_by_anyone() -> None:
    # UrlAuthType=NONE: what SAM grants for a literal `AuthType: NONE`, granted here too.
    _, resources = expand(**PUBLIC)
    assert resources["FlowFunctionUrl"]["Properties"]["AuthType"] == {"Ref": "UrlAuthType"}
    url_invoke, schedule, url = public_permissions(resources)
    assert schedule["Principal"] == "events.amazonaws.com"
    assert url == {
        "Action": "lambda:InvokeFunctionUrl",
        "FunctionName": {"Ref": "FlowFunction"},
        "FunctionUrlAuthType": "NONE",
        "Principal": "*",
    }
    assert url_invoke == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": "FlowFunction"},
        "InvokedViaFunctionUrl": True,
        "Principal": "*",
    }
    env = resources["FlowFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ASYNCFLOW_TOKEN"] == {"Ref": "Token"}


def test_an_iam_url_grants_the_public_nothing() -> None:
    _, resources = expand(UrlAuthType="AWS_IAM")
    [schedule] = public_permissions(resources)
    assert schedule["Action"] == "lambda:InvokeFunction"
    assert schedule["Principal"] == "events.amazonaws.com"
    env = resources["FlowFunction"]["Properties"]["Environment"]["Variables"]
    assert "ASYNCFLOW_TOKEN" not in env


def actions_on(resources: dict[str, Any]) -> list[tuple[str, set[str]]]:
    [policy] = resources["FlowFunctionRole"]["Properties"]["Policies"]
    return [
        (statement["Effect"], set(statement["Action"]), *sorted(refs(statement["Resource"])))
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def test_the_s3_store_is_a_bucket_the_function_may_use() -> None:
    _, resources = expand()  # S3 is the default
    assert "RunsTable" not in resources
    assert resources["RunsBucket"]["DeletionPolicy"] == "Retain"
    env = resources["FlowFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ASYNCFLOW_BACKEND"] == {"Fn::Sub": "s3://${RunsBucket}/asyncflow?packs=256"}
    [(effect, actions, *names)] = actions_on(resources)
    assert effect == "Allow"
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert names == ["AWS::Partition", "RunsBucket"]


def test_the_dynamodb_store_is_a_table_with_the_backends_keys() -> None:
    _, resources = expand(Store="DynamoDB")
    assert "RunsBucket" not in resources
    table = resources["RunsTable"]
    assert table["DeletionPolicy"] == "Retain"
    props = table["Properties"]
    # The schema DynamoDBBackend needs (its docstring, and what the tests create on moto).
    assert props["KeySchema"] == [
        {"AttributeName": "ns", "KeyType": "HASH"},
        {"AttributeName": "name", "KeyType": "RANGE"},
    ]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": "ns", "AttributeType": "S"},
        {"AttributeName": "name", "AttributeType": "S"},
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    env = resources["FlowFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ASYNCFLOW_BACKEND"] == {"Fn::Sub": "dynamodb://${RunsTable}?packs=256"}
    [(effect, actions, *names)] = actions_on(resources)
    assert effect == "Allow"
    wanted = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}
    assert wanted | {"dynamodb:DeleteItem", "dynamodb:BatchGetItem"} <= actions
    assert "RunsTable" in names


# -- shards: a schedule fanning out one SQS message per shard --------------------------------


SHARDED = {"ShardQueue", "ShardQueueMapping", "FanOutFunction", "FanOutFunctionTick"}


def test_with_one_shard_the_schedule_invokes_the_function() -> None:
    _, resources = expand()  # Shards=1 is the default
    assert not SHARDED & set(resources)
    assert resources["FlowFunctionResume"]["Properties"]["State"] == "ENABLED"
    [(_, actions, *_)] = actions_on(resources)  # the store's policy alone
    assert not any(a.startswith("sqs:") for a in actions)


@pytest.mark.parametrize("store", ["S3", "DynamoDB"])
def test_shards_fan_out_one_message_per_shard_one_invocation_each(store: str) -> None:
    _, resources = expand(Store=store, Shards="8", ResumeEveryMinutes="10")
    assert set(resources) >= SHARDED
    # The function's own schedule is off (an unsharded resume would contend with the shards);
    # the fan-out's ticks at its rate.
    resume = resources["FlowFunctionResume"]["Properties"]
    tick = resources["FanOutFunctionTick"]["Properties"]
    assert resume["State"] == "DISABLED"
    assert tick.get("State", "ENABLED") == "ENABLED"
    assert tick["ScheduleExpression"] == resume["ScheduleExpression"]
    assert refs(tick["Targets"]) == {"FanOutFunction"}
    fan_out = resources["FanOutFunction"]["Properties"]
    assert fan_out["Environment"]["Variables"] == {
        "QUEUE_URL": {"Ref": "ShardQueue"},
        "SHARDS": {"Ref": "Shards"},
    }
    [send] = resources["FanOutFunctionRole"]["Properties"]["Policies"]
    [statement] = send["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["sqs:SendMessage*"]
    assert refs(statement["Resource"]) >= {"ShardQueue"}
    # The queue feeds the function one message (one shard) per invocation, at most one
    # invocation per shard at a time, reporting failed messages only.
    mapping = resources["ShardQueueMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["ShardQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "FlowFunction"}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "Shards"}}
    queue = resources["ShardQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {"Ref": "TimeoutSeconds"}  # Lambda requires >=
    policies = resources["FlowFunctionRole"]["Properties"]["Policies"]
    poll = [
        st
        for p in policies
        for st in p["PolicyDocument"]["Statement"]
        if "sqs:ReceiveMessage" in st["Action"]
    ]
    assert len(poll) == 1
    assert {"sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= set(poll[0]["Action"])
    assert refs(poll[0]["Resource"]) >= {"ShardQueue"}


def fan_out_code() -> str:
    from cfnlint.decode import decode

    template, _ = decode(str(TEMPLATE))
    code = template["Resources"]["FanOutFunction"]["Properties"]["InlineCode"]
    assert isinstance(code, str)
    return code


def test_the_fan_out_sends_each_shard_once_and_each_message_resumes_its_share(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's own fan-out code against moto's SQS; the messages it sent, as Lambda
    hands them over, to the handler: every due run advanced by exactly one of them."""
    import boto3

    import asyncflow
    import asyncflow.aws_lambda

    sqs = boto3.client("sqs", endpoint_url=aws.endpoint)
    queue_url = sqs.create_queue(QueueName=f"shards-{os.getpid()}-{id(sqs)}")["QueueUrl"]
    n = 12  # more than one SendMessageBatch
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    monkeypatch.setenv("QUEUE_URL", queue_url)
    monkeypatch.setenv("SHARDS", str(n))
    module: dict[str, Any] = {"__name__": "index"}
    exec(compile(fan_out_code(), "index.py", "exec"), module)
    assert module["handler"]({"detail-type": "Scheduled Event"}, None) == {"shards": n}

    messages: list[dict[str, Any]] = []
    for _ in range(50):  # bounded: each receive returns what is there, at most 10
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages += got.get("Messages", [])
        if len(messages) >= n and not got.get("Messages"):
            break
    bodies = sorted((json.loads(m["Body"]) for m in messages), key=lambda b: b["shard"])
    assert bodies == [{"shard": [k, n]} for k in range(n)]

    flow = asyncflow.setup(asyncflow.MemoryBackend())

    @flow.workflow()
    async def tick(c: asyncflow.Context) -> str:
        await c.pause_once()
        return "done"

    async def start() -> list[str]:
        return [rid for _ in range(40) for rid in await flow.start("tick")]

    import anyio

    ids = anyio.run(start)
    handler = asyncflow.aws_lambda.handler(flow)
    try:
        for m in messages:  # one per invocation (BatchSize 1), as Lambda's SQS poller sends
            record = {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:shards",
                "awsRegion": "us-east-1",
            }
            assert handler({"Records": [record]}, None) == {"batchItemFailures": []}
        # Each run was resumed once (to its pause): one more resume ends every one of them.
        results = handler({}, None)
    finally:
        handler.close()
    assert sorted(r["run_id"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} == {"succeeded"}
