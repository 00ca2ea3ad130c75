"""Requests over HTTP (ASGI, Lambda function URLs and API Gateway): routes, checks, answers.

``asyncflow.asgi`` and ``asyncflow.aws_lambda`` only translate their transport's request into a
:class:`Request` and the :class:`Response` back; everything a client can observe (routes, JSON
shapes, status codes, the token check, the size limit) is decided here, once.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from ._exceptions import (
    ConfigError,
    RunNotFoundError,
    SerializationError,
    UnknownTriggerError,
    UsageError,
)
from ._results import Run, RunResult, RunStatus
from ._validate import name as checked_name
from ._validate import positive_int
from ._wire import (
    SESSION_COOKIE,
    BadRequest,
    MethodNotAllowed,
    Request,
    Response,
    check_method,
    cookie,
    same_origin,
)

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = [
    "MAX_BODY_SIZE",
    "SESSION_COOKIE",
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
    ``POST /runs/{run_id}/cancel`` cancels a waiting run and ``POST /runs/{run_id}/retry``
    executes a failed one again; ``GET /healthz`` needs no token. ``GET /`` and the routes
    under ``/dashboard/`` are the web dashboard (see :mod:`asyncflow._dashboard`).

    A browser authenticates with the dashboard's session cookie instead of the header; its
    requests that change something must then come from the dashboard's own page (see
    :meth:`credentials`).
    """

    def __init__(self, flow: Flow, *, token: str | None, max_body_size: int) -> None:
        if token is not None:
            checked_name(token, "token (or None)", error=ConfigError)
        positive_int(max_body_size, "max_body_size", error=ConfigError)
        self.flow = flow
        self.max_body_size = max_body_size
        self._token = None if token is None else token.encode()

    def token_matches(self, given: bytes) -> bool:
        """Whether ``given`` is the token (in constant time); ``False`` when there is none."""
        return self._token is not None and hmac.compare_digest(given, self._token)

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

    def session(self) -> str | None:
        """The value of the dashboard's session cookie (``None`` without a token): derived
        from the token, so the cookie never holds the token itself."""
        if self._token is None:
            return None
        import hashlib
        import hmac

        return hmac.new(self._token, b"asyncflow dashboard session", hashlib.sha256).hexdigest()

    def credentials(self, request: Request) -> str | None:
        """How ``request`` is authorized: ``"open"`` (no token is set), ``"header"``,
        ``"cookie"`` (the dashboard's session), or ``None`` (it is not).

        A request that changes something (not GET) and is authorized by its cookie, which a
        browser sends by itself, must carry the ``x-asyncflow-csrf`` header, which only a
        script of the same origin can add, and an ``Origin`` (if any) naming this host;
        otherwise it is not authorized: another site's page could have sent it.
        """
        headers = request.headers
        if self._token is None:
            return "open" if same_origin(request) else None
        if self.authorized(headers):
            return "header"
        session = cookie(headers.get("cookie", ""), SESSION_COOKIE)
        if session is None:
            return None
        import hmac

        expected = self.session() or ""
        if not hmac.compare_digest(session.encode(), expected.encode()):
            return None
        if request.method.upper() not in ("GET", "HEAD") and (
            not headers.get("x-asyncflow-csrf") or not same_origin(request)
        ):
            return None
        return "cookie"

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
        except UsageError as exc:  # an action the run's state does not allow (cancel, retry)
            return Response(409, {"error": str(exc)})
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
            check_method(method, "GET")
            return Response(200, {"status": "ok"})
        from . import _dashboard

        if _dashboard.owns(method, path):
            # Its pages answer without the token (the login form) and check it themselves;
            # a login's body is small and read within the same limits.
            return None
        allowed = _allowed(path)
        if allowed is None:
            raise BadRequest(404, f"no such route: {path}")
        if self.credentials(request) is None:
            if (
                self._token is None
                or cookie(request.headers.get("cookie", ""), SESSION_COOKIE) == self.session()
            ):
                return Response(403, {"error": CROSS_SITE})
            return Response(
                401,
                {"error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                {"www-authenticate": "Bearer"},
            )
        check_method(method, *allowed)
        return None

    async def _route(self, request: Request, time_limit: float | None) -> Response:
        method, path = request.method.upper(), request.path
        early = self._gate(request)
        if early is not None:
            return early
        if len(request.body) > self.max_body_size:
            raise BadRequest(413, f"the request body exceeds {self.max_body_size} bytes")
        from . import _dashboard

        if _dashboard.owns(method, path):
            return await _dashboard.handle(self, request)
        flow = self.flow
        if method == "GET":
            if path == "/runs":
                return Response(200, [run_dict(r, steps=False) for r in await self._list(request)])
            _no_query(request)
            run = await flow.get_run(path.removeprefix("/runs/"))
            return Response(200, run_dict(run, steps=True))
        _no_query(request)
        action = _action(path)
        if action is not None:
            run_id, verb = action
            if request.body.strip() not in (b"", b"{}"):
                raise BadRequest(400, f"POST {path} takes no request body")
            if verb == "retry":
                return Response(200, results_list(await flow.retry(run_id)))
            await flow.cancel(run_id)
            return Response(200, run_dict(await flow.get_run(run_id), steps=False))
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
    if path in ("/", "/start", "/resume") or _action(path) is not None:
        return ("POST",)
    if path == "/runs":
        return ("GET", "POST")
    run_id = path.removeprefix("/runs/")
    if run_id != path and run_id and "/" not in run_id:
        return ("GET",)
    return None


def _action(path: str) -> tuple[str, str] | None:
    """``(run_id, "cancel" or "retry")`` for ``/runs/{run_id}/cancel`` and ``.../retry``."""
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "runs" and parts[2] and parts[3] in ("cancel", "retry"):
        return parts[2], parts[3]
    return None


CROSS_SITE = (
    "refused: a browser's request that changes something must come from this server's own"
    " page (same Origin, with the x-asyncflow-csrf header)"
)


def _allow(exc: BadRequest) -> dict[str, str]:
    return {"allow": ", ".join(exc.allowed)} if isinstance(exc, MethodNotAllowed) else {}


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
