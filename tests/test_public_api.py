"""The public surface: what is exported, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import asyncflow
import asyncflow.testing


def test_all_is_complete_and_sorted() -> None:
    public = {
        name
        for name, value in vars(asyncflow).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("asyncflow")
    }
    assert public - {"testing"} <= set(asyncflow.__all__), "a public name is not in __all__"
    assert all(hasattr(asyncflow, name) for name in asyncflow.__all__)
    assert asyncflow.__all__ == sorted(asyncflow.__all__)
    assert asyncflow.testing.__all__ == sorted(asyncflow.testing.__all__)


def test_public_names_belong_to_the_package() -> None:
    for name in asyncflow.__all__:
        value = getattr(asyncflow, name)
        # (On Python 3.10 an alias such as Key = tuple[str, str] passes for a type too.)
        if isinstance(value, type) and not isinstance(value, types.GenericAlias):
            assert value.__module__ == "asyncflow", name


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(asyncflow, n)
        for n in asyncflow.__all__
        if isinstance(getattr(asyncflow, n), type)
        and issubclass(getattr(asyncflow, n), BaseException)
    ]
    assert len(errors) == 13
    assert all(issubclass(e, asyncflow.AsyncflowError) for e in errors)


@pytest.mark.procs
def test_import_loads_no_aws_or_http_library() -> None:
    code = (
        "import sys, asyncflow, asyncflow.testing;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('aiobotocore', 'botocore', 'boto3', 'httpx', 'httpx2', 'httpcore', 'aiofiles',"
        " 'uvicorn', 'starlette')"
        " or m in ('asyncflow.aws_lambda', 'asyncflow.asgi', 'asyncflow._http')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.procs
def test_import_defers_what_only_timers_events_and_schedules_use() -> None:
    """uuid, random, hashlib (OpenSSL), datetime and the modules for events, schedules and run
    management cost a cold start ~15 ms together; they load when first used."""
    code = (
        "import sys, asyncflow;"
        "print(sorted(m for m in sys.modules if m in"
        " ('uuid', 'random', 'hashlib', 'datetime', 'asyncflow._cron',"
        " 'asyncflow._events', 'asyncflow._manage')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.procs
def test_import_defers_what_only_a_call_uses() -> None:
    """The engine, the store, the backend registry, the result classes and `logging` cost
    `import asyncflow` (every CLI call, every Lambda cold start) ~20 ms together; they load
    with the first call that needs them, and the names stay asyncflow's."""
    code = (
        "import sys, asyncflow;"
        "listed = set(asyncflow.__all__) <= set(dir(asyncflow));"
        "print(sorted(m for m in sys.modules if m in"
        " ('logging', 'asyncflow._engine', 'asyncflow._store', 'asyncflow._backends',"
        " 'asyncflow._results', 'asyncflow._waits', 'asyncflow._workflow')), listed);"
        "print(*(getattr(asyncflow, n).__module__ for n in ('Run', 'RunResult', 'Step')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["[] True", "asyncflow asyncflow asyncflow"]


def test_the_package_imports_only_what_it_declares() -> None:
    """A module imported but not declared works here (the dev group brings it) and fails
    on a user's machine: sniffio once came in that way."""
    import ast
    from pathlib import Path

    # botocore comes with aiobotocore, which pins the exact versions it works with.
    declared = {"anyio", "sniffio", "exceptiongroup", "aiobotocore", "botocore"}
    # trio: only used when it is the running library, found in sys.modules; uvicorn: `serve`
    # imports it when run, and says to install asyncflow-durable[server] if it is missing.
    optional = {"trio", "uvicorn"}
    package = Path(asyncflow.__file__).parent
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = {m for m in found if m not in sys.stdlib_module_names and m != "asyncflow"}
    assert third_party <= declared | optional, third_party - declared - optional


def test_results_are_frozen_dataclasses() -> None:
    import dataclasses

    result = asyncflow.RunResult(workflow="w", run_id="r", status="paused")
    assert [f.name for f in dataclasses.fields(result)] == [
        "workflow",
        "run_id",
        "status",
        "logs",
        "result",
        "error",
        "traceback",
        "wake_at",
        "wait_event",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = "failed"  # type: ignore[misc]


@pytest.mark.procs
def test_the_server_and_lambda_modules_load_no_http_or_aws_library() -> None:
    """asyncflow.aws_lambda is what a Lambda cold start imports; asyncflow.asgi what a server
    imports before it serves. Neither needs httpx, uvicorn or the AWS libraries."""
    code = (
        "import sys, asyncflow.aws_lambda, asyncflow.asgi;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('aiobotocore', 'botocore', 'boto3', 'httpx', 'httpcore', 'uvicorn', 'starlette')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_server_and_lambda_modules_export_what_they_document() -> None:
    import asyncflow.asgi
    import asyncflow.aws_lambda

    assert asyncflow.aws_lambda.__all__ == ["LambdaContext", "LambdaHandler", "handler"]
    assert asyncflow.asgi.__all__ == ["ASGIApp", "Lifespan", "app", "lifespan"]
    for module in (asyncflow.aws_lambda, asyncflow.asgi):
        assert all(hasattr(module, name) for name in module.__all__)
