"""Lambda events as AWS documents them, built for the tests (only the fields that vary)."""

from __future__ import annotations

import base64
import json
from typing import Any

HEADERS = {
    "content-type": "application/json",
    "host": "abcdefghij.lambda-url.eu-west-1.on.aws",
    "user-agent": "curl/8.5.0",
    "x-forwarded-proto": "https",
}


def _body(body: Any, b64: bool) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return base64.b64encode(text.encode()).decode() if b64 else text


def url(
    body: Any = None,
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    headers: dict[str, str] | None = None,
    b64: bool = False,
) -> dict[str, Any]:
    """A function URL request (payload format 2.0, as API Gateway HTTP APIs send too)."""
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {**HEADERS, **(headers or {})},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:03:00:00 +0000",
            "timeEpoch": 1795748400000,
        },
        "isBase64Encoded": b64,
    }
    if body is not None:
        event["body"] = _body(body, b64)
    return event


def rest(
    body: Any = None,
    *,
    method: str = "POST",
    path: str = "/runs",
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    b64: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST API proxy request (payload format 1.0)."""
    all_headers = {"Content-Type": "application/json", "Host": "api.example.com"}
    all_headers.update(headers or {})
    return {
        "version": "1.0",
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "id",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "id",
            "resourcePath": "/{proxy+}",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
        },
        "body": None if body is None else _body(body, b64),
        "isBase64Encoded": b64,
    }


def scheduled() -> dict[str, Any]:
    """An EventBridge (CloudWatch Events) scheduled event."""
    return {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-27T03:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/asyncflow-resume"],
        "detail": {},
    }


def sqs(*bodies: Any) -> dict[str, Any]:
    """An SQS batch; message ids are ``m0``, ``m1``, ..."""
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"AQEB{i}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795748400000",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1795748400001",
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:asyncflow-triggers",
                "awsRegion": "eu-west-1",
            }
            for i, body in enumerate(bodies)
        ]
    }
