"""``flow.cli()``: run, list and show runs from the command line."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import anyio

from ._exceptions import AsyncflowError, ConfigError, UsageError
from ._results import Run, RunResult, Step

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["format_summary", "main", "waiting_for"]

OK, RUN_FAILED, BAD_INPUT = 0, 1, 2


def main(flow: Flow, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), execute, and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.backend is not None:
            from ._flow import open_backend

            flow = copy.copy(flow)
            flow.backend = open_backend(args.backend)
        flow.backend  # noqa: B018  (a bad ASYNCFLOW_BACKEND is reported here, as bad input)
        if args.command == "serve":  # uvicorn runs its own event loop
            from ._serve import serve

            return serve(flow, args)
        if args.loop == "trio" and importlib.util.find_spec("trio") is None:
            raise ConfigError("--loop trio needs trio: pip install 'asyncflow-durable[trio]'")
        return int(anyio.run(_COMMANDS[args.command], flow, args, backend=args.loop))
    except AsyncflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other bad input, instead of argparse's usage block.
        self.exit(BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--backend",
        metavar="URL",
        help="where runs are kept: file:<folder>, memory:, s3://<bucket>/<prefix>, dynamodb://<table>",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument(
        "--loop", choices=("asyncio", "trio"), default="asyncio", help="async library to run on"
    )
    parser = _Parser(description="Run and inspect this script's workflows.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        parents=[common],
        help="start TRIGGER's workflows (if given) and resume every due run",
    )
    run.add_argument("trigger", nargs="?", help="the trigger to start (omit: resume only)")
    run.add_argument("args", nargs="?", metavar="ARGS_JSON", help="the runs' args, as JSON")
    run.add_argument("--key", help="idempotency key: start at most one run per workflow for it")
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
        choices=("pending", "paused", "succeeded", "failed", "cancelled"),
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
    from ._serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"ARGS_JSON is not valid JSON: {exc}") from None


def _report(results: Sequence[RunResult], args: argparse.Namespace) -> int:
    if args.json:
        _print_json([dataclasses.asdict(r) for r in results])
    else:
        print(format_summary(results), end="")
    return RUN_FAILED if any(r.status == "failed" for r in results) else OK


async def _run(flow: Flow, args: argparse.Namespace) -> int:
    if args.args is not None and args.trigger is None:
        raise UsageError("ARGS_JSON given without a TRIGGER")
    if args.key is not None and args.trigger is None:
        raise UsageError("--key given without a TRIGGER")
    return _report(await flow.run(args.trigger, _payload(args.args), key=args.key), args)


async def _emit(flow: Flow, args: argparse.Namespace) -> int:
    return _report(await flow.emit(args.name, _payload(args.args)), args)


async def _retry(flow: Flow, args: argparse.Namespace) -> int:
    return _report(await flow.retry(args.run_id), args)


async def _cancel(flow: Flow, args: argparse.Namespace) -> int:
    await flow.cancel(args.run_id)
    if args.json:
        _print_json({"run_id": args.run_id, "status": "cancelled"})
    else:
        print(f"cancelled {args.run_id}")
    return OK


async def _runs(flow: Flow, args: argparse.Namespace) -> int:
    runs = await flow.list_runs(args.status)
    if args.json:
        _print_json([_run_dict(r, steps=False) for r in runs])
        return OK
    rows = [("RUN_ID", "WORKFLOW", "STATUS", "UPDATED", "WAITING FOR")]
    rows += [(r.run_id, r.workflow, r.status, _time(r.updated_at), waiting_for(r)) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        print(f"{line}  {row[4]}".rstrip())
    return OK


def waiting_for(run: Run) -> str:
    """Why a run that has not finished waits: the next invocation, a time, an event."""
    if run.status not in ("pending", "paused"):
        return ""
    if run.wait_event is not None:
        text = f"event {run.wait_event}"
        return text if run.wake_at is None else f"{text} (until {_time(run.wake_at)})"
    if run.wake_at is not None:
        return f"time {_time(run.wake_at)}"
    return "next invocation"


async def _show(flow: Flow, args: argparse.Namespace) -> int:
    run = await flow.get_run(args.run_id)
    if args.json:
        _print_json(_run_dict(run, steps=True))
        return OK
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
    print("steps:")
    for i, step in enumerate(run.steps, 1):
        print(f"  {i}. {_describe(step)}")
    print("logs:")
    for line in run.logs:
        print(f"  - {line}")
    return OK


_COMMANDS = {
    "run": _run,
    "emit": _emit,
    "runs": _runs,
    "show": _show,
    "cancel": _cancel,
    "retry": _retry,
}


def format_summary(results: Sequence[RunResult]) -> str:
    """The seed's RUN SUMMARY text for an invocation's results."""
    n = len(results)
    lines = ["", "---------RUN SUMMARY---------", f"{n} workflow run{'' if n == 1 else 's'}"]
    for i, r in enumerate(results, 1):
        lines += [
            f"\t{i}.",
            f"\t  workflow: {r.workflow}",
            f"\t  run_id: {r.run_id}",
            f"\t  status: {r.status}",
        ]
        if r.error is not None:
            lines.append(f"\t  error: {r.error}")
        lines.append("\t  logs:")
        lines += [f"\t    - {line}" for line in r.logs]
    return "\n".join(lines) + "\n"


def _describe(step: Step) -> str:
    # A branch's steps are listed where they were recorded, tagged with the branch's path.
    return f"[{step.branch}] {_what(step)}" if step.branch else _what(step)


def _what(step: Step) -> str:
    if step.kind == "log":
        return f"log {_compact(step.value)}"
    if step.kind == "pause":
        return "pause_once"
    if step.kind == "gather":
        return f"gather of {step.value} branches"
    if step.kind == "sleep":
        return f"sleep until {_time(step.value)}{'' if step.done else ' (sleeping)'}"
    if step.kind in ("now", "random", "uuid"):
        return f"{step.kind} -> {_compact(step.value)}"
    if step.kind == "event":
        return f"event {step.name} {_compact(step.value)}"
    if step.kind == "wait_event":
        if step.error is not None:
            return f"wait_event {step.name}: timed out"
        if not step.done:
            return f"wait_event {step.name} (waiting)"
        return f"wait_event {step.name} -> {_compact(step.value)}"
    text = f"{step.kind} {step.name}"
    if step.retry_at is not None and not step.done:
        return (
            f"{text} failed {step.attempts} time(s), last with {step.error};"
            f" next attempt at {_time(step.retry_at)}"
        )
    tried = f" (attempt {step.attempts})" if step.attempts and step.attempts > 1 else ""
    if step.error is not None:
        return f"{text} raised {step.error}{tried}"
    if not step.done:
        return f"{text} (started, not finished)"
    if step.kind == "set_state":
        return f"{text} = {_compact(step.value)}"
    return f"{text} -> {_compact(step.value)}{tried}"


def _run_dict(run: Run, *, steps: bool) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    if not steps:
        del data["steps"]
    return data


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2), file=out or sys.stdout)
