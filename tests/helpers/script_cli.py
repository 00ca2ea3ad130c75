"""Running a flow script's command line in the test's own process (tests/test_cli.py,
tests/test_isolation_cli.py): much faster than a process per invocation, and what a process
alone shows (pipes, signals, terminals, exit statuses, bytes) is tested with real ones."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
from pathlib import Path

import pytest


class ScriptCli:
    """``python SCRIPT ARGV`` as a user runs it, in this process: the flow script loaded afresh
    (its ``flow.cli()`` under ``__main__`` not run) in ``cwd`` with ``ASYNCFLOW_BACKEND`` (or
    none: ``backend = None``) and the extra environment given, then ``main(flow, argv)``
    (`asyncflow._cli`, what ``flow.cli()`` calls) with stdout and stderr captured.

    Logging is left as a fresh process has it (no handler on the root logger: pytest's own
    would take the warnings the CLI prints on stderr). A command-line mistake is argparse's
    ``SystemExit``, its status returned like the others.
    """

    def __init__(
        self,
        script: Path,
        cwd: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.script = script
        self.cwd = cwd
        self.backend: str | None = f"file:{cwd / 'store'}"
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.loads = 0

    def __call__(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        from asyncflow._cli import main

        with self.monkeypatch.context() as m:
            m.chdir(self.cwd)
            if self.backend is None:
                m.delenv("ASYNCFLOW_BACKEND", raising=False)
            else:
                m.setenv("ASYNCFLOW_BACKEND", self.backend)
            for name, value in env.items():
                m.setenv(name, value)
            m.setattr(logging.getLogger(), "handlers", [])
            self.loads += 1
            name = f"{self.script.stem}_{self.loads}"
            spec = importlib.util.spec_from_file_location(name, self.script)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.capsys.readouterr()
            try:
                status = main(module.flow, list(argv))
            except SystemExit as exc:  # argparse: a mistake on the command line, or --help
                status = exc.code if isinstance(exc.code, int) else 1
            out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess([str(self.script), *argv], status, out, err)
