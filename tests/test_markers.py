"""The markers `nox -s quick` selects by stay true: tests/conftest.py marks a test that uses
the `aws` fixtures, and fails a test that starts a process without a marker that the fast
session leaves out. Checked on a small test folder with this conftest, run by pytest."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.procs

TESTS = Path(__file__).resolve().parent


def pytest_in(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *argv],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    procs\n    aws\n    browser\n    slow\n    package\n"
    )
    (tmp_path / "test_example.py").write_text(
        textwrap.dedent(
            """
            import subprocess
            import sys

            import anyio
            import pytest


            def test_starts_a_process_unmarked():
                subprocess.run([sys.executable, "-c", "pass"], check=True)


            @pytest.mark.anyio
            async def test_runs_a_process_unmarked(anyio_backend):
                await anyio.run_process([sys.executable, "-c", "pass"])


            @pytest.mark.procs
            def test_starts_a_process_marked():
                subprocess.run([sys.executable, "-c", "pass"], check=True)


            def test_in_process():
                assert True


            @pytest.fixture
            def bucket(aws):
                return aws


            def test_on_aws(bucket):
                pass
            """
        )
    )
    return tmp_path


def test_a_test_starting_a_process_must_be_marked(folder: Path) -> None:
    proc = pytest_in(folder, "-k", "process")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = sorted(line for line in proc.stdout.splitlines() if line.startswith("FAILED"))
    assert [line.split(" ")[1] for line in failed] == [
        "test_example.py::test_runs_a_process_unmarked[asyncio]",
        "test_example.py::test_runs_a_process_unmarked[trio]",
        "test_example.py::test_starts_a_process_unmarked",
    ]
    assert "mark it @pytest.mark.procs" in proc.stdout
    assert "3 failed, 2 passed" in proc.stdout  # the marked one, and the one in-process


def test_the_aws_fixture_marks_the_tests_that_use_it_even_through_another_fixture(
    folder: Path,
) -> None:
    proc = pytest_in(folder, "--collect-only", "-m", "aws")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_example.py::test_on_aws" in proc.stdout
    assert "1/6 tests collected (5 deselected)" in proc.stdout
