"""Developer tasks: `nox -s tests`, `quick`, `lint`, `typecheck`, `examples`, `bench`, `faults`,
`pythons`, `package`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # requires-python >= 3.10


def _pyenv_pythons() -> None:
    """Let pyenv's shims find every Python the sessions ask for: installed but not enabled,
    its `python3.10` shim fails unless PYENV_VERSION names it."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if "PYENV_VERSION" in os.environ or not versions.is_dir():
        return
    wanted = tuple(f"{v}." for v in PYTHONS)
    found = sorted(p.name for p in versions.iterdir() if p.name.startswith(wanted))
    chosen = versions.parent / "version"  # the global one stays the default python3
    first = chosen.read_text().split()[0] if chosen.exists() else "system"
    if found:
        os.environ["PYENV_VERSION"] = ":".join([first, *(v for v in found if v != first)])


_pyenv_pythons()


def install(session: nox.Session) -> None:
    # Dependency groups need pip >= 25.1; a fresh venv may bring an older one.
    session.install("--quiet", "--upgrade", "pip")
    session.install("--quiet", "-e", ".", "--group", "dev")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio."""
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


# What `quick` leaves out: the markers pyproject.toml declares (tests/conftest.py keeps them true).
QUICK = "not procs and not aws and not browser and not slow and not package"


@nox.session
def quick(session: nox.Session) -> None:
    """The fast tests, to run between edits (`nox -Rs quick` reuses the environment): no
    processes, no AWS servers, no browser, nothing slow; stops at the first failure. The full
    suite (`nox -s tests`, `.ci/run`) runs them all. `nox -Rs quick -- -k retry` narrows it."""
    install(session)
    session.run("python", "-m", "pytest", "-q", "-x", "-m", QUICK, *session.posargs)


@nox.session(python=PYTHONS)
def pythons(session: nox.Session) -> None:
    """The test suite on every Python the project claims (requires-python >= 3.10)."""
    install(session)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """deploy/'s function package built as `sam build` does, run on moto and dynalite."""
    install(session)
    session.run("python", "-m", "pytest", "-q", "-m", "package", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("--quiet", "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    install(session)
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example the way the README shows, each in a fresh folder."""
    install(session)
    runs = {
        "infinite_loop.py": [["run", "loop"], ["run"]],
        "infinite_loop_with_sideeffect.py": [["run", "loop"], ["run"], ["run"]],
        "watch_price.py": [
            ["run", "買いたいもの追加", '{"item_name": "レモン", "price": 150}'],
            ["run"],
            ["run"],
        ],
        "cli.py": [["run", "hello"], ["run", "処理1"], ["emit", "event1", '{"from": "nox"}']],
        "approval.py": [["run", "デプロイ", '{"version": "1.2.0"}'], ["runs"]],
        "home_security.py": [
            ["emit", "外出"],
            ["emit", "モーションセンサー", '{"場所": "玄関"}'],
            ["emit", "帰宅"],
        ],
        "reminder.py": [
            [
                "run",
                "締め切り",
                '{"task": "レポート", "deadline": "2030-01-31T17:00:00+09:00"}',
            ],
            ["runs"],
        ],
        "compare_prices.py": [["run", "値段比較", '{"item_name": "レモン"}'], ["run"]],
    }
    for script, invocations in runs.items():
        with tempfile.TemporaryDirectory() as folder:
            for argv in invocations:
                session.run(
                    "python",
                    str(ROOT / "examples" / script),
                    *argv,
                    env={"ASYNCFLOW_BACKEND": f"file:{os.path.join(folder, 'store')}"},
                )
    watch_price_http(session)


def watch_price_http(session: nox.Session) -> None:
    """watch_price_http.py against the price service it brings, started for the occasion."""
    import socket
    import subprocess
    import time
    import urllib.request

    script = str(ROOT / "examples" / "watch_price_http.py")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    python = os.path.join(session.bin, "python")
    service = subprocess.Popen([python, script, "price-service", "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").close()
                break
            except OSError:
                if time.monotonic() > deadline or service.poll() is not None:
                    session.error("the price service did not start")
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as folder:
            env = {
                "ASYNCFLOW_BACKEND": f"file:{os.path.join(folder, 'store')}",
                "PRICE_SERVICE_URL": f"http://127.0.0.1:{port}",
            }
            lemon = '{"item_name": "レモン", "price": 150}'
            session.run("python", script, "run", "買いたいもの追加", lemon, env=env)
            session.run("python", script, "run", env=env)
            session.run("python", script, "run", env=env)
    finally:
        service.terminate()
        service.wait()


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers (ttflow, DBOS on SQLite); writes the figures into
    README.md. `nox -s bench -- --quick` scales every scenario down; `-- --only steps-` runs
    some (README left unchanged); see `python benchmarks/run.py --help`."""
    install(session)
    # DBOS runs on SQLite with no server; it is a benchmark peer, not a dev dependency.
    session.install("--quiet", "dbos>=3.4,<4")
    session.run("python", "benchmarks/run.py", "--write-readme", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """The long fault-injection campaign: real processes killed with SIGKILL on the file
    backend, then on S3 and DynamoDB (moto's server), each also with its runs in packs; prints
    one JSON report per store and fails if an invariant broke.
    `nox -s faults -- FILE_KILLS AWS_KILLS` (default 100 50)."""
    install(session)
    file_kills, aws_kills = (session.posargs + ["100", "50"][len(session.posargs) :])[:2]
    stores = [("file", file_kills), ("s3", aws_kills), ("dynamodb", aws_kills)]
    stores += [(f"packed-{store}", kills) for store, kills in stores]  # runs kept in packs
    for store, kills in stores:
        session.run(
            "python",
            "tests/faults/campaign.py",
            "--store",
            store,
            "--kills",
            kills,
            "--seconds",
            "900",
        )
