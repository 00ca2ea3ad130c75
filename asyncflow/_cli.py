"""``flow.cli()``: run, list and show runs from the command line."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import anyio

from ._backend import Backend
from ._backends import BACKENDS
from ._exceptions import AsyncflowError, ConfigError, RunNotFoundError, UsageError, leaves
from ._progress import Progress
from ._results import Run, RunResult, Step
from ._steps import address, describe
from ._summary import (
    LANGUAGES,
    Summary,
    compact,
    format_summary,
    language,
    local_time,
    message,
    waiting_for,
)
from ._telemetry import OBSERVER

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from ._flow import Flow
    from ._shard import Shard

__all__ = ["format_summary", "main", "store_name", "waiting_for"]

OK, RUN_FAILED, BAD_INPUT = 0, 1, 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report a command Ctrl-C ended
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a command killed by a closed pipe reports


def main(flow: Flow, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), execute, and return the exit status.

    Never a traceback: bad input is one ``error:`` line (exit 2), Ctrl-C ``error: interrupted``
    (exit 130, on asyncio and trio alike), a reader that closed the pipe (``| head``) ends the
    output quietly.
    """
    args = _parser().parse_args(argv)
    session = _Session(language(args.lang))
    try:
        try:
            return _unwrapped(_execute, flow, args, session)
        except AsyncflowError as exc:
            session.erase_progress()
            print(f"error: {exc}{session.where(exc)}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt:
            session.erase_progress()
            if session.summary.runs():  # what was done before the interruption
                session.print_summary(args)
            print("error: interrupted", file=sys.stderr)
            return INTERRUPTED
    except BrokenPipeError:
        # The reader is gone (`| head`): what is left unwritten goes nowhere, and the
        # interpreter's final flush must not fail on it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _unwrapped(execute: Callable[..., int], *args: Any) -> int:
    """``execute(*args)``, raising what stopped it rather than a group of it: trio raises it
    through the task groups it crossed."""
    try:
        return execute(*args)
    except BaseExceptionGroup as group:
        inner = list(leaves(group))
        for kind in (KeyboardInterrupt, BrokenPipeError):
            if any(isinstance(e, kind) for e in inner):
                raise kind from None
        if all(isinstance(e, AsyncflowError) for e in inner):
            raise inner[0] from None
        raise
    except BaseException as exc:
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and isinstance(exc, asyncio.CancelledError):
            # Python 3.10: anyio's asyncio runner turns Ctrl-C into the cancellation of the
            # main task, which leaves the loop as CancelledError (3.11's asyncio.Runner
            # raises KeyboardInterrupt). Nothing else cancels a whole command from outside.
            raise KeyboardInterrupt from None
        raise


def _execute(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    if args.backend is not None:
        from ._flow import open_backend

        flow = copy.copy(flow)
        flow.backend = open_backend(args.backend)
    session.store = store_name(flow.backend)  # a bad ASYNCFLOW_BACKEND is reported here
    if args.command == "serve":  # uvicorn runs its own event loop
        if args.loop != "asyncio":
            raise ConfigError(
                "serve runs on uvicorn, which runs asyncio only: drop --loop trio (the"
                " other commands take it)"
            )
        from ._serve import serve

        return serve(flow, args)
    if args.loop == "trio" and importlib.util.find_spec("trio") is None:
        raise ConfigError("--loop trio needs trio: pip install 'asyncflow-durable[trio]'")
    with _warnings_to_stderr():
        return int(anyio.run(_COMMANDS[args.command], flow, args, session, backend=args.loop))


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """The ``asyncflow`` logger's warnings as ``warning:`` lines, but for those the RUN SUMMARY
    reports (``summarised``), unless the application configured logging itself."""
    log = logging.getLogger("asyncflow")
    if log.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.addFilter(lambda record: not getattr(record, "summarised", False))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def store_name(backend: Backend) -> str:
    """The store a backend keeps its runs in, as a URL a user can pass to ``--backend`` (the
    backend's :meth:`~asyncflow.Backend.url`), else the backend's repr."""
    return backend.url() or repr(backend)


class _Session:
    """What one command line call reports: its language, store, summary and progress."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.store: str | None = None
        self.summary = Summary()
        self.progress: Progress | None = None

    def where(self, exc: AsyncflowError) -> str:
        # Which store was read: "no run with id X" in a folder other than the intended one
        # is otherwise a riddle. (A bad backend URL names itself.)
        if self.store is None or isinstance(exc, ConfigError):
            return ""
        return f" (store: {self.store})"

    def observe(self, args: argparse.Namespace) -> Progress:
        """Install the observer collecting the summary (and drawing progress on a terminal)."""
        tty = not args.json and _isatty(sys.stderr)
        self.progress = Progress(self.summary, sys.stderr if tty else None, self.lang)
        OBSERVER.set(self.progress)
        return self.progress

    def erase_progress(self) -> None:
        if self.progress is not None:
            self.progress.erase()

    def print_summary(self, args: argparse.Namespace) -> None:
        self.erase_progress()
        if args.json:
            _print_json([dataclasses.asdict(r) for r in self.summary.runs()])
            for note in self.notes():
                print(note, file=sys.stderr)
        else:
            print(format_summary(self.summary, lang=self.lang, store=self.store), end="")

    def notes(self) -> list[str]:
        """The summary's lines besides the runs (for ``--json``, which has no room for them)."""
        only = Summary(held=self.summary.held, undefined=self.summary.undefined)
        text = format_summary(only, lang=self.lang)
        return [line for line in text.splitlines()[3:] if line] + self.summary.notes


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other bad input, instead of argparse's usage block.
        self.exit(BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name.

    Given after the name they are the subcommand's, which would overwrite the values given
    before it with its defaults: there they default to nothing (``SUPPRESS``).
    """

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--backend",
        metavar="URL",
        default=default(None),
        help=f"where runs are kept: {', '.join(b.form for b in BACKENDS)} (default: setup()'s,"
        " else $ASYNCFLOW_BACKEND, else file:.asyncflow)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="async library to run on",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of text"
    )
    parser.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=default(None),
        help="language of the RUN SUMMARY (default: ja when $LANG is ja_*, else en)",
    )


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    _common_options(common, defaults=False)
    parser = _Parser(description="Run and inspect this script's workflows.")
    _common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        parents=[common],
        help="start TRIGGER's workflows (if given) and resume every due run",
    )
    run.add_argument("trigger", nargs="?", help="the trigger to start (omit: resume only)")
    run.add_argument("args", nargs="?", metavar="ARGS_JSON", help="the runs' args, as JSON")
    run.add_argument("--key", help="idempotency key: start at most one run per workflow for it")
    run.add_argument(
        "--until-done",
        action="store_true",
        help="keep invoking, sleeping until the next timer, until no run is due (or Ctrl-C)",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        help="resume only shard K of N of the due runs (0 <= K < N), so that N invocations"
        " started together share them; shard 0 also ticks the schedules",
    )
    start = sub.add_parser(
        "start",
        parents=[common],
        help="record TRIGGER's new runs without executing anything (the next run does)",
    )
    start.add_argument("trigger", help="the trigger to start")
    start.add_argument("args", nargs="?", metavar="ARGS_JSON", help="the runs' args, as JSON")
    start.add_argument("--key", help="idempotency key: start at most one run per workflow for it")
    emit = sub.add_parser(
        "emit",
        parents=[common],
        help="emit event NAME: start its workflows, wake the runs waiting for it, resume due runs",
    )
    emit.add_argument("name", metavar="NAME")
    emit.add_argument("args", nargs="?", metavar="ARGS_JSON", help="the event's args, as JSON")
    runs = sub.add_parser("runs", parents=[common], help="list runs, with what each one waits for")
    runs.add_argument(
        "--status",
        choices=("pending", "paused", "succeeded", "failed", "cancelled", "damaged"),
        help="only these",
    )
    show = sub.add_parser("show", parents=[common], help="show one run with its steps and logs")
    show.add_argument("run_id")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a pending or paused run")
    cancel.add_argument("run_id")
    retry = sub.add_parser(
        "retry", parents=[common], help="execute a failed run again from its failed step"
    )
    retry.add_argument("run_id")
    purge = sub.add_parser(
        "purge",
        parents=[common],
        help="delete finished runs older than a retention (with their idempotency keys)",
    )
    purge.add_argument(
        "--finished-before",
        required=True,
        metavar="WHEN",
        type=_when,
        help="a date/time (2026-01-31, 2026-01-31T12:00, local unless it has an offset) or"
        " an age (30d, 12h, 45m, 2w): runs that finished before it go",
    )
    purge.add_argument(
        "--status",
        action="append",
        choices=("succeeded", "failed", "cancelled"),
        help="only runs that ended so (repeatable; default: all three)",
    )
    purge.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    from ._serve import add_parser as add_serve_parser

    add_serve_parser(sub, [common])
    return parser


def _when(text: str) -> float:
    """A ``--finished-before`` value as epoch seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return time.time() - int(text[:-1]) * units[text[-1]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid WHEN {text!r}: a date/time such as 2026-01-31T12:00 or an age such as 30d"
        ) from None
    return when.timestamp()  # naive: local time


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"ARGS_JSON is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("ARGS_JSON nests too deeply to be read") from None


async def _invoke(
    session: _Session, args: argparse.Namespace, call: Awaitable[list[RunResult]]
) -> int:
    session.observe(args)
    session.summary.add(await call)
    session.print_summary(args)
    return _status(session)


def _due_again(result: RunResult) -> bool:
    """Paused until the next invocation (``pause_once``): due again at once."""
    return result.status == "paused" and result.wake_at is None and result.wait_event is None


def _status(session: _Session) -> int:
    runs = session.summary.runs()
    if any(r.status == "damaged" for r in runs):
        return BAD_INPUT  # a stored record was skipped: someone must look at it
    return RUN_FAILED if any(r.status == "failed" for r in runs) else OK


async def _key_notes(flow: Flow, trigger: str, key: str | None, lang: str) -> dict[str, str]:
    """The runs an idempotency key started already, by workflow, each with a note naming it."""
    if key is None:
        return {}
    from ._manage import keyed_run
    from ._store import Store

    notes: dict[str, str] = {}
    async with flow:
        for workflow, bound in flow.workflows.items():
            if bound != trigger:
                continue
            run_id = await keyed_run(Store(flow.backend, flow.clock), workflow, key)
            if run_id is None:
                continue
            try:
                status: str = (await flow.get_run(run_id)).status
            except RunNotFoundError:
                status = "?"  # the key's winner is storing it, or died first
            notes[run_id] = message(
                lang, "key_used", key=key, run_id=run_id, workflow=workflow, status=status
            )
    return notes


async def _run(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    if args.args is not None and args.trigger is None:
        raise UsageError("ARGS_JSON given without a TRIGGER")
    if args.key is not None and args.trigger is None:
        raise UsageError("--key given without a TRIGGER")
    payload = _payload(args.args)
    shard = None
    if args.shard is not None:
        from ._shard import parse_shard

        shard = parse_shard(args.shard)
    if args.trigger is not None:
        used = await _key_notes(flow, args.trigger, args.key, session.lang)
        session.summary.notes += used.values()
    if not args.until_done:
        call = flow.run(args.trigger, payload, key=args.key, shard=shard)
        return await _invoke(session, args, call)
    progress = session.observe(args)
    async with flow:
        await _work(flow, args.trigger, payload, args.key, progress, shard)
    session.print_summary(args)
    return _status(session)


async def _work(
    flow: Flow,
    trigger: str | None,
    payload: Any,
    key: str | None,
    progress: Progress,
    shard: Shard | None = None,
) -> None:
    """Invoke until no run is due: again at once while runs are due at the next invocation,
    else asleep until the earliest timer (of its shard's runs, with a shard); done when only
    events (or nothing) can wake a run."""
    while True:
        results = await flow.run(trigger, payload, key=key, shard=shard)
        trigger = payload = key = None  # started once: the next invocations resume
        progress.summary.add(results)
        if any(map(_due_again, results)):
            continue
        wake = await flow.next_wakeup(shard=shard)
        wake_at = None if wake is None else wake.timestamp()
        if wake_at is None:
            return
        delay = wake_at - flow.clock()
        progress.asleep(wake_at)
        # Not less than a moment when nothing advanced: a timer due now whose run another
        # invocation holds would otherwise be polled in a busy loop.
        await anyio.sleep(max(delay, 0.0 if results else 0.05))


async def _start(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    used = await _key_notes(flow, args.trigger, args.key, session.lang)
    run_ids = await flow.start(args.trigger, _payload(args.args), key=args.key)
    started = [run_id for run_id in run_ids if run_id not in used]
    if args.json:
        _print_json({"run_ids": run_ids, "started": started})
    else:
        for run_id in started:
            print(f"started {run_id}")
        for note in used.values():
            print(note)
        print(message(session.lang, "store", store=session.store))
    return OK


async def _emit(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    observer = session.observe(args)
    lang = session.lang

    results = await flow.emit(args.name, _payload(args.args))
    session.summary.add(results)
    if observer.delivered_to == 0:
        session.summary.notes.append(message(lang, "not_taken", name=args.name))
    session.print_summary(args)
    return _status(session)


async def _retry(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    return await _invoke(session, args, flow.retry(args.run_id))


async def _cancel(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    await flow.cancel(args.run_id)
    if args.json:
        _print_json({"run_id": args.run_id, "status": "cancelled"})
    else:
        print(f"cancelled {args.run_id}")
    return OK


async def _purge(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    from ._manage import purge
    from ._store import Store

    statuses = args.status or ["succeeded", "failed", "cancelled"]
    async with flow:
        purged = await purge(
            Store(flow.backend, flow.clock),
            finished_before=args.finished_before,
            statuses=statuses,
            dry_run=args.dry_run,
        )
    if args.json:
        _print_json({"purged": purged.run_ids, "unreadable": purged.unreadable})
        return OK
    verb = "would purge" if args.dry_run else "purged"
    n = len(purged.run_ids)
    print(
        f"{verb} {n} run{'' if n == 1 else 's'} ({', '.join(statuses)}) that finished before"
        f" {_time(args.finished_before)} from {session.store}"
    )
    for run_id in purged.run_ids if args.dry_run else ():
        print(f"  {run_id}")
    for location in purged.unreadable:
        print(f"kept {location}: it cannot be read as a run", file=sys.stderr)
    return OK


async def _runs(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    runs = await flow.list_runs(args.status)
    code = BAD_INPUT if any(r.status == "damaged" for r in runs) else OK
    if args.json:
        _print_json([_run_dict(r, steps=False) for r in runs])
        return code
    print(message(session.lang, "store", store=session.store))
    if not runs:
        print("no runs" if args.status is None else f"no {args.status} runs")
        return OK
    rows = [("RUN_ID", "WORKFLOW", "STATUS", "UPDATED", "WAITING FOR")]
    rows += [
        (r.run_id, r.workflow, r.status, _time(r.updated_at) if r.updated_at else "?",
         waiting_for(r))
        for r in runs
    ]  # fmt: skip
    widths = [max(_width(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        line = "  ".join(_pad(cell, w) for cell, w in zip(row, widths, strict=False))
        print(f"{line}  {row[4]}".rstrip())
    for r in runs:
        if r.status == "damaged":
            print(f"error: run {r.run_id} skipped: {r.error}", file=sys.stderr)
    return code


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide and full-width characters two,
    combining marks none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


async def _show(flow: Flow, args: argparse.Namespace, session: _Session) -> int:
    run = await flow.get_run(args.run_id)
    code = BAD_INPUT if run.status == "damaged" else OK
    if args.json:
        _print_json(_run_dict(run, steps=True))
        return code
    print(f"run_id: {run.run_id}")
    print(f"workflow: {run.workflow}")
    print(f"trigger: {run.trigger}")
    print(f"status: {run.status}")
    if waiting_for(run):
        print(f"waiting for: {waiting_for(run)}")
    print(f"created: {_time(run.created_at)}")
    print(f"updated: {_time(run.updated_at)}")
    print(f"args: {_compact(run.args)}")
    if run.status == "succeeded":
        print(f"result: {_compact(run.result)}")
    if run.error is not None:
        print(f"error: {run.error}")
    if run.traceback is not None:
        print("traceback:")
        print("".join(f"  {line}" for line in run.traceback.splitlines(keepends=True)).rstrip())
    if run.steps:
        print("steps:")
        addresses = _addresses(run.steps)
        width = max(map(len, addresses))
        for address, step in zip(addresses, run.steps, strict=True):
            print(f"  {address.ljust(width)}  {_what(step)}")
    if run.logs:
        print("logs:")
        for line in run.logs:
            print(f"  - {line}")
    return code


_COMMANDS = {
    "run": _run,
    "emit": _emit,
    "runs": _runs,
    "show": _show,
    "cancel": _cancel,
    "retry": _retry,
    "start": _start,
    "purge": _purge,
}


def _addresses(steps: Sequence[Step]) -> list[str]:
    """Each step's address, as branch paths count: its position in its own context, from 0
    (``3``: the workflow's step 3; ``3.1/0``: the first step of branch 1 of the gather at 3)."""
    positions: dict[str, int] = {}
    addresses = []
    for step in steps:
        path = step.branch or ""
        position = positions.get(path, 0)
        positions[path] = position + 1
        addresses.append(address(path, position))
    return addresses


def _what(step: Step) -> str:
    return describe(step)


def _run_dict(run: Run, *, steps: bool) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    if not steps:
        del data["steps"]
    return data


_compact = compact
_time = local_time


def _print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2), file=out or sys.stdout)
