"""The Lambda handler fed AWS's own sample events (tests/aws_events, see its README): each HTTP
sample adapted to a request of ours (path, method, token, body) the way its source sends it,
and the samples of sources the handler does not serve."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncflow
import asyncflow.aws_lambda

SAMPLES = Path(__file__).resolve().parent / "aws_events"
TOKEN = "s3cr3t"

HTTP_SAMPLES = [
    "powertools/apiGatewayProxyV2Event.json",
    "powertools/apiGatewayProxyEvent.json",
    "powertools/lambdaFunctionUrlEvent.json",
    "powertools/albEvent.json",
    "powertools/albMultiValueHeadersEvent.json",
    "aws-lambda-go/apigw-request.json",
    "aws-lambda-go/apigw-v2-request-no-authorizer.json",
    "aws-lambda-go/apigw-v2-request-iam.json",
    "aws-lambda-go/lambda-urls-request.json",
    "aws-lambda-go/alb-lambda-target-request-headers-only.json",
    "aws-lambda-go/alb-lambda-target-request-multivalue-headers.json",
]
UNSERVED = {
    "powertools/s3Event.json": "S3 notification",
    "powertools/dynamoStreamEvent.json": "DynamoDB stream",
    "powertools/kinesisStreamEvent.json": "Kinesis stream",
    "powertools/snsEvent.json": "SNS",
    "powertools/cloudWatchLogEvent.json": "CloudWatch Logs",
    "aws-lambda-go/s3-event.json": "S3 notification",
    "aws-lambda-go/dynamodb-event.json": "DynamoDB stream",
    "aws-lambda-go/kinesis-event.json": "Kinesis stream",
    "aws-lambda-go/sns-event.json": "SNS",
    "aws-lambda-go/cloudwatch-logs-event.json": "CloudWatch Logs",
}


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return event


@pytest.fixture
def handler() -> Iterator[asyncflow.aws_lambda.LambdaHandler]:
    flow = asyncflow.setup("memory:")

    @flow.workflow()
    async def greet(c: asyncflow.Context, args: Any) -> Any:
        return {"hello": args["name"]}

    made = asyncflow.aws_lambda.handler(flow, token=TOKEN)
    yield made
    made.close()


def request(
    name: str, *, method: str = "POST", path: str = "/runs", body: Any = None
) -> dict[str, Any]:
    """Sample ``name`` as a request of ours, carrying the token as its source carries headers."""
    event = copy.deepcopy(sample(name))
    context = event["requestContext"]
    if "httpMethod" in event:  # REST API, ALB
        event["httpMethod"] = method
        event["path"] = path
        event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
        if "elb" in context:  # an ALB sends one form only, the target group's setting
            event.pop(
                "queryStringParameters"
                if "multiValueHeaders" in event
                else "multiValueQueryStringParameters"
            )
    else:  # payload 2.0: HTTP API, function URL
        context["http"]["method"] = method
        context["http"]["path"] = event["rawPath"] = path
        event["rawQueryString"] = ""
    auth = f"Bearer {TOKEN}"
    if event.get("headers") is not None or "multiValueHeaders" not in event:
        event["headers"] = {**(event.get("headers") or {}), "Authorization": auth}
    if event.get("multiValueHeaders") is not None:
        event["multiValueHeaders"]["Authorization"] = [auth]
    event["body"] = None if body is None else json.dumps(body)
    event["isBase64Encoded"] = False
    return event


@pytest.mark.parametrize("name", HTTP_SAMPLES)
def test_every_http_sample_runs_a_trigger_and_lists_it(name: str, handler: Any) -> None:
    answer = handler(request(name, body={"trigger": "greet", "args": {"name": name}}))
    assert answer["statusCode"] == 200, answer
    [run] = json.loads(answer["body"])
    assert (run["status"], run["result"]) == ("succeeded", {"hello": name})
    listing = handler(request(name, method="GET"))
    assert listing["statusCode"] == 200, listing
    assert [r["run_id"] for r in json.loads(listing["body"])] == [run["run_id"]]


@pytest.mark.parametrize("name", HTTP_SAMPLES)
def test_every_http_sample_without_the_token_is_refused(name: str, handler: Any) -> None:
    event = request(name, method="GET")
    for form in ("headers", "multiValueHeaders"):
        if event.get(form):
            event[form].pop("Authorization")
    assert handler(event)["statusCode"] == 401


@pytest.mark.parametrize(
    "name", ["powertools/albEvent.json", "powertools/albMultiValueHeadersEvent.json"]
)
def test_an_alb_gets_a_status_description_and_headers_in_its_own_form(
    name: str, handler: Any
) -> None:
    multi = "multiValueHeaders" in sample(name)
    answer = handler(request(name, method="GET", path="/nowhere"))
    assert answer["statusCode"] == 404
    assert answer["statusDescription"] == "404 Not Found"
    if multi:
        assert "headers" not in answer
        assert answer["multiValueHeaders"]["content-type"] == ["application/json"]
    else:
        assert "multiValueHeaders" not in answer
        assert answer["headers"]["content-type"] == "application/json"


def test_an_http_api_with_a_named_stage(handler: Any) -> None:
    # rawPath then starts with the stage: /prod/runs.
    event = request("powertools/apiGatewayProxyV2Event.json", method="GET", path="/prod/runs")
    event["requestContext"]["stage"] = "prod"
    answer = handler(event)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"]) == []


def test_a_double_slash_is_the_same_route(handler: Any) -> None:
    # `curl "$URL/runs"` with a URL that ends in "/", as the stack's output does.
    event = request("powertools/lambdaFunctionUrlEvent.json", method="GET", path="//runs")
    assert handler(event)["statusCode"] == 200


def test_an_sqs_sample_batch_with_our_bodies(handler: Any) -> None:
    event = sample("powertools/sqsEvent.json")
    for i, record in enumerate(event["Records"]):
        record["body"] = json.dumps({"trigger": "greet", "args": {"name": f"m{i}"}})
    assert handler(event) == {"batchItemFailures": []}
    again = handler(event)  # redelivered: nothing twice
    assert again == {"batchItemFailures": []}
    listing = handler(request("powertools/lambdaFunctionUrlEvent.json", method="GET"))
    names = sorted(r["result"]["hello"] for r in json.loads(listing["body"]))
    assert names == [f"m{i}" for i in range(len(event["Records"]))]


@pytest.mark.parametrize("name", sorted(UNSERVED))
def test_events_of_unserved_sources_get_an_error_naming_the_source(
    name: str, handler: Any
) -> None:
    with pytest.raises(asyncflow.UsageError) as info:
        handler(sample(name))
    assert f"this handler does not serve {UNSERVED[name]} events" in str(info.value)
