"""The web dashboard: its page, assets and the JSON it reads, served by :class:`_http.Api`.

``GET /`` is the page (a login form when the request is not authorized), the hand-written
files in this folder are its assets (``/dashboard/assets/...``, no build step), and
``/dashboard/api/...`` answers the page's questions: runs filtered and paged on the server,
the event history and graph, the shared state. Actions go through the ordinary routes
(``POST /runs``, ``/resume``, ``/runs/{id}/cancel``, ``/runs/{id}/retry``).

Listing runs reads every stored record once per process: a summary of each is kept with the
version it was read at, and later requests read only the records whose version changed, so
a page of 10,000 runs costs two listings and a sort.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from .._exceptions import AsyncflowError
from .._record import stored_json
from .._store import Store
from .._wire import SESSION_COOKIE, BadRequest, Request, Response, check_method, same_origin

if TYPE_CHECKING:
    from .._flow import Flow


class Api(Protocol):
    """What the dashboard needs of the HTTP API that routes to it (``_http.Api``)."""

    flow: Flow

    def credentials(self, request: Request) -> str | None: ...

    def session(self) -> str | None: ...

    def token_matches(self, given: bytes) -> bool: ...


__all__ = ["handle", "owns"]

PREFIX = "/dashboard/"
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors"
    " 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    # Not no-referrer: with it, browsers send "Origin: null" with the login form, which the
    # cross-site check must refuse.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_PER_PAGE, _MAX_PER_PAGE = 50, 500
_PREVIEW = 200  # characters of an event's args kept in a summary
_READ_BUDGET = 0.3  # seconds a runs page spends reading records beyond its own
_CHUNK = 1000  # records read at once
_STATUSES = ("pending", "paused", "succeeded", "failed", "cancelled")


def owns(method: str, path: str) -> bool:
    """Whether ``method path`` is the dashboard's (``POST /`` stays the runs' route)."""
    return (path == "/" and method in ("GET", "HEAD")) or path.startswith(PREFIX)


async def handle(api: Api, request: Request) -> Response:
    """Answer a request for the dashboard."""
    method, path = request.method.upper(), request.path
    if path.startswith(PREFIX + "assets/"):
        name = path.removeprefix(PREFIX + "assets/")
        if name not in _ASSETS:
            raise BadRequest(404, f"no such route: {path}")
        _only(method, "GET", "HEAD")
        headers = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}
        return Response(200, _asset(name), headers, _ASSETS[name])
    if path == PREFIX + "login":
        _only(method, "POST")
        return _login(api, request)
    if path == PREFIX + "logout":
        _only(method, "POST")
        return _redirect(_clear_cookie())
    credentials = api.credentials(request)
    if path == "/":
        page = "login.html" if credentials is None else "index.html"
        auth = "open" if credentials == "open" else "token"
        html = _asset(page).replace(b"{{auth}}", auth.encode())
        return Response(200, html, _PAGE_HEADERS, "text/html; charset=utf-8")
    if credentials is None:
        return Response(401, {"error": "not logged in: open the dashboard's page and log in"})
    _only(method, "GET")
    query = _query(request)
    state = _state(api)
    if path == PREFIX + "api/runs":
        return Response(200, await state.runs_page(query), {"cache-control": "no-store"})
    if path == PREFIX + "api/events":
        return Response(200, await state.events(query), {"cache-control": "no-store"})
    raise BadRequest(404, f"no such route: {path}")


def _only(method: str, *allowed: str) -> None:
    check_method(method, *allowed)


def _asset(name: str) -> bytes:
    return (resources.files(__package__) / name).read_bytes()


def _query(request: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}


# -- logging in ------------------------------------------------------------------------------


def _login(api: Api, request: Request) -> Response:
    """Check the token of the login form; answer with the session cookie and a redirect to
    the page, or the form again with a 401."""
    form = parse_qs(request.body.decode("utf-8", "replace"))
    given = (form.get("token") or [""])[-1].encode()
    if same_origin(request) and api.token_matches(given):
        cookie = f"{SESSION_COOKIE}={api.session()}; Path=/; Secure; HttpOnly; SameSite=Strict"
        return _redirect(cookie)
    # Back to the page, which shows the form again saying so (a page answered here, under
    # /dashboard/, would resolve its assets' relative addresses from the wrong folder).
    headers = {"location": "../?login=failed", "cache-control": "no-store"}
    return Response(303, b"", headers, "text/plain; charset=utf-8")


def _clear_cookie() -> str:
    return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"


def _redirect(cookie: str) -> Response:
    # Relative to /dashboard/login: the page, wherever the app is mounted.
    headers = {"location": "../", "set-cookie": cookie, "cache-control": "no-store"}
    return Response(303, b"", headers, "text/plain; charset=utf-8")


# -- what the page asks ------------------------------------------------------------------------


# The summaries of each API object, kept for its life (made on first use).
_DASHBOARDS: weakref.WeakKeyDictionary[Api, _Dashboard] = weakref.WeakKeyDictionary()


def _state(api: Api) -> _Dashboard:
    dashboard = _DASHBOARDS.get(api)
    if dashboard is None:
        dashboard = _DASHBOARDS[api] = _Dashboard(api)
    return dashboard


class _Dashboard:
    """Summaries of the stored runs, kept per process and refreshed by version."""

    def __init__(self, api: Api) -> None:
        self.flow = api.flow
        # run id -> (namespace, version, summary) as last read
        self._summaries: dict[str, tuple[str, str, dict[str, Any]]] = {}

    async def listing(self, store: Store) -> dict[str, tuple[str, str]]:
        """Every stored run: its id -> where it is and its version."""
        listed = await store.run_versions()
        cache = self._summaries
        for name in [name for name in cache if name not in listed]:
            del cache[name]
        return listed

    async def read(
        self,
        store: Store,
        listed: dict[str, tuple[str, str]],
        first: list[str] | None = None,
    ) -> int:
        """Summarise the listed records that changed since they were last read; return how
        many were left unread.

        ``first``: read these (a page), then the others, newest first, only for about
        ``_READ_BUDGET`` seconds: a first look at a store of 10,000 runs answers quickly, and
        the next requests (the page polls) read the rest. ``None``: read every one.
        """
        cache = self._summaries
        stale = [n for n in sorted(listed, reverse=True) if cache.get(n, ("",))[:2] != listed[n]]
        size = _CHUNK
        if first is not None:
            wanted = set(first)
            page = [n for n in stale if n in wanted]
            stale = page + [n for n in stale if n not in wanted]
            size = len(page) or _CHUNK  # the page on its own, first
        began = time.monotonic()
        done = 0
        while done < len(stale):
            if first is not None and done and time.monotonic() - began > _READ_BUDGET:
                break
            keys = [(listed[name][0], name) for name in stale[done : done + size]]
            size = _CHUNK
            for key, found in zip(keys, await store.read_listed(keys), strict=True):
                if found is None:  # it moved meanwhile: the next listing finds it
                    cache.pop(key[1], None)
                    continue
                data, version, location = found
                cache[key[1]] = (key[0], version, _summary(data, key[1], location))
            done += len(keys)
        return len(stale) - done

    async def summaries(self, store: Store) -> list[dict[str, Any]]:
        """A summary of every stored run, newest first."""
        listed = await self.listing(store)
        await self.read(store, listed)
        cache = self._summaries
        return [cache[name][2] for name in sorted(listed, reverse=True) if name in cache]

    async def runs_page(self, query: dict[str, str]) -> dict[str, Any]:
        unknown = sorted(set(query) - {"status", "workflow", "wait", "q", "page", "per_page"})
        if unknown:
            raise BadRequest(400, f"unknown query parameter(s): {', '.join(unknown)}")
        page = _positive(query.get("page", "1"), "page")
        per_page = min(_positive(query.get("per_page", str(_PER_PAGE)), "per_page"), _MAX_PER_PAGE)
        statuses = {s for s in query.get("status", "").split(",") if s}
        bad = sorted(statuses - {*_STATUSES, "damaged"})
        if bad:
            raise BadRequest(400, f"unknown status {bad[0]!r}: use {', '.join(_STATUSES)}")
        workflow, wait = query.get("workflow", ""), query.get("wait", "")
        search = query.get("q", "").strip().lower()
        start = (page - 1) * per_page
        cache = self._summaries
        async with self.flow:
            store = Store(self.flow.backend, self.flow.clock)
            listed = await self.listing(store)
            # Newest first: run ids sort by creation time. They alone answer a search.
            order = [n for n in sorted(listed, reverse=True) if not search or search in n.lower()]
            if statuses or workflow or wait:
                # Filters on what records hold: every record is needed.
                unread = await self.read(store, listed)
                order = [
                    n
                    for n in order
                    if n in cache and _matches(cache[n][2], statuses, workflow, wait)
                ]
            else:
                unread = await self.read(store, listed, order[start : start + per_page])
        shown = [cache[n][2] for n in order[start : start + per_page] if n in cache]
        counts = dict.fromkeys(_STATUSES, 0)
        waits: set[str] = set()
        for _, _, run in cache.values():
            counts[run["status"]] = counts.get(run["status"], 0) + 1
            if run["wait_event"] is not None:
                waits.add(run["wait_event"])
        return {
            "total": len(order),
            "page": page,
            "per_page": per_page,
            "runs": [_public(r) for r in shown],
            "counts": counts,
            "all": len(listed),
            "unread": unread,  # records not summarised yet: the counts are partial
            "workflows": self.flow.workflows,
            "waits": sorted(waits),
            "now": self.flow.clock(),
        }

    async def events(self, query: dict[str, str]) -> dict[str, Any]:
        if set(query) - {"limit"}:
            raise BadRequest(400, "unknown query parameter(s): use 'limit'")
        limit = min(_positive(query.get("limit", "200"), "limit"), 5000)
        async with self.flow:
            store = Store(self.flow.backend, self.flow.clock)
            runs = await self.summaries(store)
            names = await store.state_names()
            state = []
            for name in names[:500]:
                try:
                    value = await store.read_state(name, None)
                except AsyncflowError as exc:
                    state.append({"name": name, "error": str(exc)})
                else:
                    state.append({"name": name, "value": value})
        history = _history(runs)
        return {
            "history": history[:limit],
            "total": len(history),
            "graph": _graph(self.flow.workflows, runs),
            "state": state,
            "state_total": len(names),
        }


def _positive(text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(400, f"{what} must be a positive integer, not {text!r}")
    return int(text)


def _matches(run: dict[str, Any], statuses: set[str], workflow: str, wait: str) -> bool:
    return (
        (not statuses or run["status"] in statuses)
        and (not workflow or run["workflow"] == workflow)
        and (not wait or _waits_for(run, wait))
    )


def _waits_for(run: dict[str, Any], wait: str) -> bool:
    if run["status"] != "paused":
        return False
    if wait == "event":
        return run["wait_event"] is not None
    if wait.startswith("event:"):
        return bool(run["wait_event"] == wait.removeprefix("event:"))
    if wait == "time":
        return run["wait_event"] is None and run["wake_at"] is not None
    if wait == "invocation":
        return run["wait_event"] is None and run["wake_at"] is None
    return False


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def _summary(data: bytes, name: str, location: str) -> dict[str, Any]:
    """What the runs page and the event views need of a stored record."""
    try:
        raw = stored_json(data)  # (with the steps a run being recorded appended)
        if not isinstance(raw, dict) or raw.get("asyncflow") != "run":
            raise ValueError("it is not an asyncflow run record")
        steps = raw.get("steps") or []
        trigger = str(raw["trigger"])
        summary: dict[str, Any] = {
            "run_id": str(raw["run_id"]),
            "workflow": str(raw["workflow"]),
            "status": str(raw["status"]),
            "trigger": trigger,
            "created_at": float(raw["created_at"]),
            "updated_at": float(raw["updated_at"]),
            "wake_at": raw.get("wake_at"),
            "wait_event": raw.get("wait_event"),
            "error": raw.get("error"),
            "steps": len(steps),
        }
        emitted, received, waited, sets = [], [], set(), set()
        for step in steps:
            kind = step.get("kind")
            change = step.get("change")
            if kind == "event" and isinstance(change, dict):
                emitted.append(("event", step.get("name"), change.get("id"), change.get("args")))
            elif kind == "set_state":
                sets.add(step.get("name"))
                if isinstance(change, dict):
                    emitted.append(
                        ("state", step.get("name"), change.get("id"), change.get("args"))
                    )
            elif kind == "wait_event":
                waited.add(step.get("name"))
                if "event" in step:
                    received.append((step.get("name"), step["event"]))
        summary["_emitted"] = [
            (kind, n, i, _preview(args)) for kind, n, i, args in emitted if isinstance(i, str)
        ]
        summary["_received"] = received
        summary["_waited"] = sorted(w for w in waited if isinstance(w, str))
        summary["_sets"] = sorted(s for s in sets if isinstance(s, str))
        if trigger != "every" and not trigger.startswith("cron:"):
            summary["_args"] = _preview(raw.get("args"))
        return summary
    except (ValueError, KeyError, TypeError) as exc:
        return {
            "run_id": name,
            "workflow": "?",
            "status": "damaged",
            "trigger": "?",
            "created_at": 0.0,
            "updated_at": 0.0,
            "wake_at": None,
            "wait_event": None,
            "error": f"{location} cannot be read: {exc}",
            "steps": 0,
        }


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _id_time(event_id: str) -> float | None:
    # Ids begin with their time in milliseconds, 11 hex digits (see _record.new_run_id).
    try:
        return int(event_id[:11], 16) / 1000
    except ValueError:
        return None


def _history(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event and state change the records show, newest first: who emitted it (a run,
    or from outside: ``None``), the runs it started, the runs it woke.

    An event's id starts the ids of the runs it started (``_events.derived_run_id``); the runs
    ``flow.run(name)`` starts have an event of their own each.
    """
    events: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(kind: str, name: str, prefix: str) -> dict[str, Any]:
        key = (f"{kind}:{name}", prefix)
        if key not in events:
            events[key] = {
                "id": prefix,
                "kind": kind,
                "name": name,
                "at": _id_time(prefix),
                "args": None,
                "emitted_by": None,
                "started": [],
                "woke": [],
            }
        return events[key]

    runs = list(runs)
    for run in runs:
        for kind, name, event_id, args in run.get("_emitted", ()):
            found = entry(kind, name, event_id[:14])
            found["emitted_by"] = {"run_id": run["run_id"], "workflow": run["workflow"]}
            found["args"] = args
        for name, event_id in run.get("_received", ()):
            if isinstance(event_id, str):
                entry("event", name, event_id[:14])["woke"].append(run["run_id"])
    for run in runs:
        trigger = run["trigger"]
        if trigger == "every" or trigger.startswith("cron:") or run["status"] == "damaged":
            continue
        kind, name = ("state", trigger[6:]) if trigger.startswith("state:") else ("event", trigger)
        found = entry(kind, name, run["run_id"][:14])
        found["started"].append({"run_id": run["run_id"], "workflow": run["workflow"]})
        if found["args"] is None:
            found["args"] = run.get("_args")
    return sorted(events.values(), key=lambda e: (e["id"], e["name"]), reverse=True)


def _graph(workflows: dict[str, str], runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Which workflow emits which event (or sets which state), and which workflows each event
    or state starts (from the triggers) or wakes (from the waits recorded)."""
    edges: set[tuple[str, str, str]] = set()
    for workflow, trigger in workflows.items():
        if trigger.startswith("state:"):
            edges.add((trigger, f"workflow:{workflow}", "starts"))
        elif trigger == "every" or trigger.startswith("cron:"):
            edges.add((f"schedule:{trigger}", f"workflow:{workflow}", "starts"))
        else:
            edges.add((f"event:{trigger}", f"workflow:{workflow}", "starts"))
    for run in runs:
        source = f"workflow:{run['workflow']}"
        for kind, name, _, _ in run.get("_emitted", ()):
            edges.add((source, f"{kind}:{name}", "emits" if kind == "event" else "sets"))
        for name in run.get("_waited", ()):
            edges.add((f"event:{name}", source, "wakes"))
        for name in run.get("_sets", ()):
            edges.add((source, f"state:{name}", "sets"))
    nodes = sorted({n for a, b, _ in edges for n in (a, b)} | {f"workflow:{w}" for w in workflows})
    return {
        "nodes": [
            {"id": n, "kind": n.partition(":")[0], "name": n.partition(":")[2]} for n in nodes
        ],
        "edges": [{"from": a, "to": b, "kind": k} for a, b, k in sorted(edges)],
    }
