"""Run a flow on AWS Lambda: ``handler = asyncflow.aws_lambda.handler(flow)``.

The handler tells the events Lambda passes apart by their shape:

- function URL and API Gateway HTTP API requests (payload 2.0), REST API requests (1.0) and
  Application Load Balancer requests (single or multi-value headers): routed like
  :func:`asyncflow.asgi.app` (``POST /`` runs the JSON body ``{"trigger": ..., "args": ...}``;
  without a trigger it resumes due runs), answered with an HTTP response;
- EventBridge (CloudWatch Events) scheduled events: resume due runs (an EventBridge event
  whose ``detail`` is a trigger request runs it);
- SQS batches: each message body is a trigger request; the failed ones are reported in
  ``batchItemFailures`` so that only they are retried;
- a direct invocation with a ``{"trigger": ..., "args": ...}`` object (``{}`` resumes).

A resume or trigger request that is not HTTP (an EventBridge detail, an SQS message body, a
direct invocation) may name a shard, ``{"shard": [k, n]}``: the invocation then resumes only
shard ``k`` of ``n`` of the due runs (:meth:`asyncflow.Flow.run`'s ``shard``). A schedule that
sends n such SQS messages, one per shard, has n invocations share the due runs without
contending for them (``deploy/template.yaml``, parameter ``Shards``).

Events of other sources (S3 notifications, DynamoDB and Kinesis streams, SNS, CloudWatch
Logs, ...) raise a :class:`~asyncflow.UsageError` naming the source.

One event loop runs in a background thread of the container with the flow entered
(``async with flow``), so the backend's connections survive warm invocations.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import anyio
from anyio.from_thread import BlockingPortal

from ._exceptions import AsyncflowError, ConfigError, UsageError
from ._flow import DEFAULT_BACKEND, Flow, deliver_event
from ._http import (
    MAX_BODY_SIZE,
    Api,
    BadRequest,
    Order,
    Request,
    Response,
    decode_json,
    internal_error,
    log_error,
    parse_order,
    results_list,
)
from ._results import RunResult
from ._shard import Shard, as_shard
from ._validate import seconds

__all__ = ["LambdaContext", "LambdaHandler", "handler"]

logger = logging.getLogger("asyncflow")


class LambdaContext(Protocol):
    """What the handler uses of the context object Lambda passes."""

    def get_remaining_time_in_millis(self) -> int: ...


def handler(
    flow: Flow,
    *,
    token: str | None = None,
    safety_margin: float = 5.0,
    max_body_size: int = MAX_BODY_SIZE,
    loop: Literal["asyncio", "trio"] = "asyncio",
) -> LambdaHandler:
    """The function Lambda calls, ``handler(event, context)``, for ``flow``.

    Args:
        flow: the flow to run.
        token: if given, HTTP requests must carry ``Authorization: Bearer <token>`` (else 401).
            Default: the ``ASYNCFLOW_TOKEN`` environment variable, if set. Other events come
            from AWS itself and are authorized by IAM.
        safety_margin: seconds of the invocation's remaining time
            (``context.get_remaining_time_in_millis()``) kept free: no run is started after
            that point, so that the runs started can reach their next stop before Lambda's
            timeout. Runs not started stay due for the next invocation.
        max_body_size: the largest HTTP request body accepted, in bytes (else 413).
        loop: the async library to run on.

    Raises:
        ConfigError: a setting that cannot work, or running inside Lambda with no backend
            configured (the default folder would vanish with the container).
    """
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and _is_default_backend(flow):
        raise ConfigError(
            "no backend configured for AWS Lambda: set ASYNCFLOW_BACKEND=s3://<bucket>/<prefix>"
            " (the default folder would vanish with the container)"
        )
    margin = seconds(safety_margin, "safety_margin", error=ConfigError, zero=True)
    if loop not in ("asyncio", "trio"):
        raise ConfigError(f"loop must be 'asyncio' or 'trio', not {loop!r}")
    if token is None:
        token = os.environ.get("ASYNCFLOW_TOKEN") or None
    api = Api(flow, token=token, max_body_size=max_body_size)
    return LambdaHandler(api, safety_margin=margin, loop=loop)


def _is_default_backend(flow: Flow) -> bool:
    if os.environ.get("ASYNCFLOW_BACKEND"):
        return False
    from ._backends._file import FileBackend

    backend = flow.backend
    default = os.path.normpath(DEFAULT_BACKEND.removeprefix("file:"))
    return isinstance(backend, FileBackend) and os.path.normpath(backend.folder) == default


class LambdaHandler:
    """The callable :func:`handler` returns; Lambda calls it once per event.

    The event loop starts in a background thread at the first call and lives as long as the
    container; :meth:`close` stops it (Lambda never needs to: it freezes and discards
    containers).
    """

    def __init__(self, api: Api, *, safety_margin: float, loop: str) -> None:
        self._api = api
        self._safety_margin = safety_margin
        self._loop = loop
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def flow(self) -> Flow:
        return self._api.flow

    def __call__(self, event: Any, context: LambdaContext | None = None) -> Any:
        """Handle one Lambda event (see the module's docstring for the kinds)."""
        time_limit = self._time_limit(context)
        portal = self._start()
        if isinstance(event, dict):
            if _is_http(event):
                return portal.call(self._http, event, time_limit)
            if "detail-type" in event and "source" in event:
                # EventBridge: a schedule's detail is empty (resume); another rule's event may
                # carry a trigger request as its detail.
                detail, shard = _sharded(event.get("detail") or {}, "EventBridge detail")
                order = _order(detail, "EventBridge detail")
                return results_list(portal.call(self._perform, order, shard, time_limit))
            records = event.get("Records")
            if isinstance(records, list) and records and _is_sqs(records[0]):
                return portal.call(self._sqs, records, time_limit)
            source = _unserved_source(event)
            if source is not None:
                raise UsageError(
                    f"this handler does not serve {source} events: it takes HTTP requests"
                    " (function URL, API Gateway, ALB), EventBridge events, SQS messages and"
                    ' direct invocations {"trigger": ..., "args": ...}'
                )
        event, shard = _sharded(event, "Lambda event")
        order = _order(event, "Lambda event")
        return results_list(portal.call(self._perform, order, shard, time_limit))

    def close(self) -> None:
        """Leave the flow (closing its backend) and stop the event loop thread."""
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
        if portal is not None and thread is not None:
            portal.call(portal.stop)
            thread.join()

    async def _perform(
        self, order: Order, shard: Shard | None, time_limit: float | None
    ) -> list[RunResult]:
        if shard is None:
            return await order.perform(self.flow, time_limit)
        return await self.flow.run(
            order.trigger, order.args, key=order.key, time_limit=time_limit, shard=shard
        )

    def _time_limit(self, context: LambdaContext | None) -> float | None:
        if context is None:
            return None
        left = context.get_remaining_time_in_millis() / 1000 - self._safety_margin
        if left <= 0:
            logger.warning(
                "%.1f s left in this invocation, less than the safety margin of %.1f s:"
                " no run is started",
                left + self._safety_margin,
                self._safety_margin,
            )
        return max(left, 0.0)

    def _start(self) -> BlockingPortal:
        with self._lock:
            if self._portal is not None and self._thread is not None and self._thread.is_alive():
                return self._portal
            ready: list[BlockingPortal] = []
            failed: list[BaseException] = []
            started = threading.Event()
            # A daemon thread of our own rather than anyio's start_blocking_portal(): its pool
            # thread would keep the interpreter from exiting until someone stops it.
            thread = threading.Thread(
                target=_serve_portal,
                args=(self.flow, self._loop, ready, failed, started),
                name="asyncflow-lambda-loop",
                daemon=True,
            )
            thread.start()
            started.wait()
            if failed:
                thread.join()
                raise failed[0]
            self._portal, self._thread = ready[0], thread
            return ready[0]

    async def _http(self, event: dict[str, Any], time_limit: float | None) -> dict[str, Any]:
        try:
            request = _http_request(event)
        except BadRequest as exc:
            response = Response(exc.status, {"error": str(exc)})
        except Exception as exc:
            response = internal_error(exc)
        else:
            response = await self._api.handle(request, time_limit=time_limit)
        headers = {"content-type": response.content_type, **response.headers}
        answer: dict[str, Any] = {
            "statusCode": response.status,
            "body": response.encode().decode(),
            "isBase64Encoded": False,
        }
        if "set-cookie" in headers and "httpMethod" not in event:
            # Payload 2.0 (function URLs, HTTP APIs) takes cookies in a field of their own.
            answer["cookies"] = [headers.pop("set-cookie")]
        if _is_alb(event):
            # An ALB wants the status line's text, and headers in the form it sent them
            # (multiValueHeaders when the target group has multi-value headers on).
            from http import HTTPStatus

            try:
                phrase = HTTPStatus(response.status).phrase
            except ValueError:
                phrase = ""
            answer["statusDescription"] = f"{response.status} {phrase}".strip()
            if "multiValueHeaders" in event:
                answer["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
                return answer
        answer["headers"] = headers
        return answer

    async def _sqs(self, records: list[Any], time_limit: float | None) -> dict[str, Any]:
        # Each message becomes stored runs first; one invocation then advances them all with
        # the due ones. A message counts as done once its runs are stored: a failure while
        # advancing is left to the next invocation, never retried as a duplicate message.
        # Messages naming a shard ({"shard": [k, n]}, what a fan-out sends) make the invocation
        # resume those shards' due runs only; without one it resumes every due run.
        failures: list[dict[str, str]] = []
        shards: list[Shard] = []
        for record in records:
            message_id = record.get("messageId") if isinstance(record, dict) else None
            try:
                body = record["body"] if isinstance(record, dict) else None
                if not isinstance(body, str):
                    raise BadRequest(400, "an SQS record without a body")
                request, shard = _sharded(decode_json(body.encode()), "SQS message")
                order = parse_order(request)
                if shard is not None and shard not in shards:
                    shards.append(shard)
                # SQS delivers a message at least once: its id makes a redelivery start (and,
                # for an event, wake) nothing twice, unless the message names a key of its own.
                key = order.key or (f"sqs:{message_id}" if message_id else None)
                if order.event is not None:
                    # Delivered (its runs stored, its waiters woken) and no run advanced: the
                    # one invocation below advances them with the rest.
                    await deliver_event(self.flow, order.event, order.args, key=key)
                elif order.trigger is not None:
                    await self.flow.start(order.trigger, order.args, key=key)
            except AsyncflowError as exc:
                logger.warning("SQS message %s not accepted: %s", message_id, exc)
                failures.append({"itemIdentifier": str(message_id)})
            except Exception as exc:
                log_error(exc)
                failures.append({"itemIdentifier": str(message_id)})
        try:
            if not shards:
                await self.flow.run(time_limit=time_limit)
            # (One shard per batch where the queue's batch size is 1, as the template sets it.)
            stop_at = None if time_limit is None else time.monotonic() + time_limit
            for shard in shards:
                left = None if stop_at is None else max(stop_at - time.monotonic(), 0.0)
                await self.flow.run(time_limit=left, shard=shard)
        except Exception as exc:
            log_error(exc)
        return {"batchItemFailures": failures}


async def _portal_main(flow: Flow, ready: list[BlockingPortal], started: threading.Event) -> None:
    # The flow first: a failure to open the backend then surfaces as itself, not wrapped in
    # the portal's task group.
    async with flow, BlockingPortal() as portal:
        ready.append(portal)
        started.set()
        await portal.sleep_until_stopped()


def _serve_portal(
    flow: Flow,
    loop: str,
    ready: list[BlockingPortal],
    failed: list[BaseException],
    started: threading.Event,
) -> None:
    try:
        anyio.run(_portal_main, flow, ready, started, backend=loop)
    except BaseException as exc:
        failed.append(exc)
    finally:
        started.set()


def _sharded(value: Any, what: str) -> tuple[Any, Shard | None]:
    """A request without its ``"shard"`` field, and that shard (``None`` if not named).

    Raises:
        UsageError: the shard is not ``[k, n]`` with ``0 <= k < n``, or goes with an event.
    """
    if not isinstance(value, dict) or "shard" not in value:
        return value, None
    rest = {k: v for k, v in value.items() if k != "shard"}
    if "event" in rest:
        # Delivering an event is not per run: it reaches its waiting runs in every shard.
        raise UsageError(
            f'{what}: "shard" goes with a resume or a trigger, not with an event (an event'
            " reaches the runs waiting for it in every shard)"
        )
    return rest, as_shard(value["shard"], f'the "shard" of the {what}')


def _order(value: Any, what: str) -> Order:
    try:
        return parse_order(value)
    except BadRequest as exc:
        raise UsageError(f"unrecognised {what}: {exc}") from None


def _is_http(event: Mapping[str, Any]) -> bool:
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return False
    return "httpMethod" in event or isinstance(context.get("http"), dict)


def _is_sqs(record: Any) -> bool:
    return isinstance(record, dict) and record.get("eventSource") == "aws:sqs"


def _is_alb(event: Mapping[str, Any]) -> bool:
    context = event.get("requestContext")
    return isinstance(context, dict) and isinstance(context.get("elb"), dict)


# What the records of other sources say they are (``eventSource``; SNS spells it
# ``EventSource``), and names for the messages.
_SOURCES = {
    "aws:s3": "S3 notification",
    "aws:dynamodb": "DynamoDB stream",
    "aws:kinesis": "Kinesis stream",
    "aws:sns": "SNS",
    "aws:kafka": "Kafka (MSK)",
    "SelfManagedKafka": "Kafka",
    "aws:mq": "Amazon MQ",
    "aws:rmq": "RabbitMQ",
    "aws:ses": "SES",
    "aws:codecommit": "CodeCommit",
}


def _unserved_source(event: Mapping[str, Any]) -> str | None:
    """The name of the AWS source of an event this handler does not serve, if it is one."""
    if "awslogs" in event:
        return "CloudWatch Logs"
    if "eventSource" in event and "records" in event:  # Kafka, MSK
        source = str(event["eventSource"])
        return _SOURCES.get(source, source)
    if "deliveryStreamArn" in event:
        return "Kinesis Data Firehose"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        named = records[0].get("eventSource") or records[0].get("EventSource")
        if isinstance(named, str):
            return _SOURCES.get(named, named)
    return None


def _http_request(event: Mapping[str, Any]) -> Request:
    """A :class:`Request` from a payload 2.0 (HTTP API, function URL) or 1.0 (REST) event."""
    # Modules that only some events need are imported where needed: a Lambda cold start pays
    # for every import at module level.
    if "httpMethod" in event:  # 1.0 (REST API) and ALB
        method = event["httpMethod"]
        path = event.get("path") or "/"
        multi = event.get("multiValueQueryStringParameters") or {}
        single = event.get("queryStringParameters") or {}
        pairs = [(k, v) for k, vs in multi.items() for v in vs] or list(single.items())
        query = ""
        if pairs:
            from urllib.parse import urlencode

            query = urlencode(pairs)
    else:  # 2.0
        method = event["requestContext"]["http"]["method"]
        path = event.get("rawPath") or "/"
        query = event.get("rawQueryString") or ""
        # An HTTP API's named stage ("prod") comes first in rawPath; "$default" does not.
        stage = event["requestContext"].get("stage")
        if (
            isinstance(stage, str)
            and stage not in ("", "$default")
            and (path == f"/{stage}" or path.startswith(f"/{stage}/"))
        ):
            path = path[len(stage) + 1 :] or "/"
    # A base URL ending in "/" joined with "/runs" gives "//runs": the same route.
    if "//" in path:
        import re

        path = re.sub("/{2,}", "/", path)
    # Multi-value headers (REST APIs send both forms; an ALB one or the other): the last
    # value of each wins, as it does in the single-value form.
    headers = {
        str(k).lower(): str(vs[-1])
        for k, vs in (event.get("multiValueHeaders") or {}).items()
        if isinstance(vs, list) and vs
    }
    headers.update({str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()})
    cookies = event.get("cookies")
    if isinstance(cookies, list) and cookies:  # payload 2.0 moves them out of the headers
        headers["cookie"] = "; ".join(str(c) for c in cookies)
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise BadRequest(400, "the request body is not text")
    if event.get("isBase64Encoded"):
        import base64

        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise BadRequest(400, "the request body is not valid base64") from None
    else:
        raw = body.encode()
    return Request(method=str(method), path=str(path), query=query, headers=headers, body=raw)
