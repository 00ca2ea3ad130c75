"""Requests over HTTP (ASGI, Lambda function URLs and API Gateway): routes, checks, answers.

``asyncflow.asgi`` and ``asyncflow.aws_lambda`` only translate their transport's request into a
:class:`Request` and the :class:`Response` back; everything a client can observe (routes, JSON
shapes, status codes, the token check, the size limit) is decided here, once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from ._exceptions import (
    AsyncflowError,
    RunNotFoundError,
    SerializationError,
    UnknownTriggerError,
    UsageError,
)
from ._results import Run, RunResult, RunStatus

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = [
    "MAX_BODY_SIZE",
    "Api",
    "BadRequest",
    "Order",
    "Request",
    "Response",
    "decode_json",
    "internal_error",
    "log_error",
    "parse_order",
    "results_list",
    "run_dict",
]

logger = logging.getLogger("asyncflow")

#: Default largest request body accepted, in bytes (a trigger's args, mostly).
MAX_BODY_SIZE = 1024 * 1024
_STATUSES: tuple[str, ...] = get_args(RunStatus)
_REQUEST_KEYS = {"trigger", "trigger_name", "event", "args", "key"}


class BadRequest(AsyncflowError):
    """A request this API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """An HTTP request, whatever carried it. ``headers`` have lower-case names."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What to answer: a status and a JSON-serializable body."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        # (backslashreplace: a lone surrogate a client sent, quoted back, stays an escape)
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Order:
    """What a request asks the flow to do: start ``trigger``'s workflows, emit ``event``, or
    (neither) resume the due runs."""

    trigger: str | None = None
    event: str | None = None
    args: Any = None
    key: str | None = None  # an idempotency key for the runs ``trigger`` starts

    async def perform(self, flow: Flow, time_limit: float | None = None) -> list[RunResult]:
        """One invocation of ``flow`` doing what was asked."""
        if self.event is not None:
            return await flow.emit(self.event, self.args, time_limit=time_limit)
        return await flow.run(self.trigger, self.args, key=self.key, time_limit=time_limit)


def parse_order(body: Any) -> Order:
    """The :class:`Order` of a request body: ``{"trigger": ..., "args": ..., "key": ...}``,
    ``{"event": ..., "args": ...}``, or ``{}`` (resume).

    ttflow's ``trigger_name`` is accepted for ``trigger``.

    Raises:
        BadRequest: the body is not such an object (status 400).
    """
    if not isinstance(body, dict):
        raise BadRequest(400, f"the request must be a JSON object, not {_json_type(body)}")
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise BadRequest(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))}: expected 'trigger' (or 'event')"
            " and 'args'",
        )
    if "trigger" in body and "trigger_name" in body:
        raise BadRequest(400, "give 'trigger' or 'trigger_name', not both")
    trigger = body.get("trigger", body.get("trigger_name"))
    event = body.get("event")
    if trigger is not None and event is not None:
        raise BadRequest(400, "give 'trigger' or 'event', not both")
    for field_name, value in (("trigger", trigger), ("event", event), ("key", body.get("key"))):
        if value is not None and (not isinstance(value, str) or not value):
            raise BadRequest(
                400, f"'{field_name}' must be a non-empty string, not {_json_type(value)}"
            )
    if trigger is None and event is None and "args" in body:
        raise BadRequest(400, "'args' given without a 'trigger' or an 'event'")
    if trigger is None and "key" in body:
        raise BadRequest(400, "'key' given without a 'trigger'")
    return Order(trigger=trigger, event=event, args=body.get("args"), key=body.get("key"))


def decode_json(data: bytes) -> Any:
    """The JSON value of a request body; an empty body is an empty object.

    Raises:
        BadRequest: the body is not UTF-8 JSON (status 400).
    """
    if not data.strip():
        return {}
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8 text") from None
    except ValueError as exc:
        raise BadRequest(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(400, "the request body nests too deeply to be read") from None


def run_dict(run: Run, *, steps: bool) -> dict[str, Any]:
    """A run as the CLI's ``--json`` shows it (``runs`` without steps, ``show`` with)."""
    data = dataclasses.asdict(run)
    if not steps:
        del data["steps"]
    return data


def results_list(results: list[RunResult]) -> list[dict[str, Any]]:
    """An invocation's results as the CLI's ``run --json`` shows them."""
    return [dataclasses.asdict(r) for r in results]


def log_error(exc: BaseException) -> str:
    """Log ``exc`` with its traceback under a fresh error id; return the id."""
    error_id = os.urandom(8).hex()
    logger.error("internal error %s: %s", error_id, exc, exc_info=exc)
    return error_id


def internal_error(exc: BaseException) -> Response:
    """Log ``exc``; answer 500 with its error id and no details."""
    return Response(500, {"error": "internal error", "error_id": log_error(exc)})


class Api:
    """The routes of a flow over HTTP.

    ``POST /runs`` (and ``POST /`` for Lambda function URLs) runs a trigger request now and
    answers with the results; ``POST /start`` records new runs; ``POST /resume`` resumes due
    runs; ``GET /runs`` lists runs (``?status=``); ``GET /runs/{run_id}`` shows one;
    ``GET /healthz`` needs no token.
    """

    def __init__(self, flow: Flow, *, token: str | None, max_body_size: int) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise UsageError("token must be a non-empty string or None")
        if isinstance(max_body_size, bool) or not isinstance(max_body_size, int):
            raise UsageError("max_body_size must be a positive integer")
        if max_body_size < 1:
            raise UsageError(f"max_body_size must be at least 1, not {max_body_size}")
        self.flow = flow
        self.max_body_size = max_body_size
        self._token = None if token is None else token.encode()

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the token (always, when there is none to carry)."""
        if self._token is None:
            return True
        # Imported here, as the other modules used by some requests only: a Lambda cold start
        # pays for every import at module level.
        import hmac

        scheme, _, given = headers.get("authorization", "").partition(" ")
        # Constant time: a comparison that stops at the first difference tells an attacker,
        # by its timing, how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    async def handle(self, request: Request, *, time_limit: float | None = None) -> Response:
        """Answer ``request``; never raises (unexpected errors become 500 with an error id).

        Args:
            request: the request.
            time_limit: passed to :meth:`Flow.run` for the requests that run workflows.
        """
        try:
            return await self._route(request, time_limit)
        except BadRequest as exc:
            return Response(exc.status, {"error": str(exc)}, _allow(exc))
        except RunNotFoundError as exc:
            return Response(404, {"error": str(exc)})
        except (UnknownTriggerError, SerializationError) as exc:
            return Response(400, {"error": str(exc)})
        except Exception as exc:  # anything else is ours to fix, not the client's
            return internal_error(exc)

    def gate(self, request: Request) -> Response | None:
        """The answer to ``request`` that needs no body (its route, token and method are
        checked), or ``None`` when the body must be read and the request handled.

        A transport that streams bodies calls this first: an unauthenticated client is
        answered before it sends a byte of its body.
        """
        try:
            return self._gate(request)
        except BadRequest as exc:
            return Response(exc.status, {"error": str(exc)}, _allow(exc))

    def _gate(self, request: Request) -> Response | None:
        method, path = request.method.upper(), request.path
        if path == "/healthz":
            _method(method, "GET")
            return Response(200, {"status": "ok"})
        allowed = _allowed(path)
        if allowed is None:
            raise BadRequest(404, f"no such route: {path}")
        if not self.authorized(request.headers):
            return Response(
                401,
                {"error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                {"www-authenticate": "Bearer"},
            )
        _method(method, *allowed)
        return None

    async def _route(self, request: Request, time_limit: float | None) -> Response:
        method, path = request.method.upper(), request.path
        early = self._gate(request)
        if early is not None:
            return early
        if len(request.body) > self.max_body_size:
            raise BadRequest(413, f"the request body exceeds {self.max_body_size} bytes")
        flow = self.flow
        if method == "GET":
            if path == "/runs":
                return Response(200, [run_dict(r, steps=False) for r in await self._list(request)])
            _no_query(request)
            run = await flow.get_run(path.removeprefix("/runs/"))
            return Response(200, run_dict(run, steps=True))
        _no_query(request)
        order = parse_order(decode_json(request.body))
        if path == "/start":
            if order.trigger is None:
                raise BadRequest(
                    400, "POST /start needs a 'trigger' (emit events with POST /runs)"
                )
            run_ids = await flow.start(order.trigger, order.args, key=order.key)
            return Response(200, {"run_ids": run_ids})
        if path == "/resume" and (order.trigger is not None or order.event is not None):
            raise BadRequest(400, "POST /resume takes no trigger or event: use POST /runs")
        return Response(200, results_list(await order.perform(flow, time_limit)))

    async def _list(self, request: Request) -> list[Run]:
        from urllib.parse import parse_qs

        query = parse_qs(request.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"status"})
        if unknown:
            raise BadRequest(400, f"unknown query parameter(s): {', '.join(unknown)}")
        statuses = [s for value in query.get("status", []) for s in value.split(",")]
        bad = [s for s in statuses if s not in _STATUSES]
        if bad:
            raise BadRequest(
                400, f"unknown status {bad[0]!r}: use {', '.join(map(repr, _STATUSES))}"
            )
        return await self.flow.list_runs(statuses or None)  # type: ignore[arg-type]


def _allowed(path: str) -> tuple[str, ...] | None:
    """The methods a route takes, or ``None`` for no such route."""
    if path in ("/", "/start", "/resume"):
        return ("POST",)
    if path == "/runs":
        return ("GET", "POST")
    run_id = path.removeprefix("/runs/")
    if run_id != path and run_id and "/" not in run_id:
        return ("GET",)
    return None


class _MethodNotAllowed(BadRequest):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(405, f"method not allowed: use {' or '.join(allowed)}")
        self.allowed = allowed


def _method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _MethodNotAllowed(allowed)


def _allow(exc: BadRequest) -> dict[str, str]:
    return {"allow": ", ".join(exc.allowed)} if isinstance(exc, _MethodNotAllowed) else {}


def _no_query(request: Request) -> None:
    if request.query:
        raise BadRequest(400, f"{request.path} takes no query parameters")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
