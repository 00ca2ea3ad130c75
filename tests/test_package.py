"""The function's package built as `sam build` builds it: deploy/app/requirements.txt installed
into a folder (`pip install -r requirements.txt -t DIR`), this project coming from a wheel built
from the checkout, then the handler imported from that folder alone in a fresh interpreter and
invoked against moto's S3 and DynamoDB and dynalite's DynamoDB.

Needs the package index (the dependencies are downloaded): marked `package`, deselected by
default; `.ci/run` and `nox -s package` run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.package

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/app as `sam build` leaves it: the app's files and its requirements in one folder."""
    work = tmp_path_factory.mktemp("package")
    app = work / "app"
    shutil.copytree(ROOT / "deploy" / "app", app, ignore=shutil.ignore_patterns("wheels"))
    # deploy/README.md's build step: the wheel next to the requirements that name it.
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(app / "wheels"),
        str(ROOT),
    )
    build = work / "build"
    shutil.copytree(app, build, ignore=shutil.ignore_patterns("wheels", "requirements.txt"))
    run(
        sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "-r", str(app / "requirements.txt"), "-t", str(build),
    )  # fmt: skip
    return build


def invoke(build: Path, backend: str, endpoint: str) -> list[dict[str, object]]:
    """The built handler invoked in `python -I -S` (no site-packages) with only the build
    folder on its path, as Lambda's runtime imports it."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "import app, asyncflow, anyio, aiobotocore;"
        "assert all(m.__file__.startswith(sys.argv[1]) for m in (app, asyncflow, anyio,"
        " aiobotocore)), 'imported from elsewhere';"
        "print(json.dumps(app.handler({'trigger': 'remind', 'args': {'text': 'hi'}}, None)))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "AWS_LAMBDA_FUNCTION_NAME": "asyncflow-app",
        "ASYNCFLOW_BACKEND": backend,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    proc = run(sys.executable, "-I", "-S", "-c", code, str(build), env=env, cwd=str(build.parent))
    result: list[dict[str, object]] = json.loads(proc.stdout)
    return result


def test_the_build_holds_this_project_not_the_index_asyncflow(built: Path) -> None:
    assert (built / "asyncflow" / "aws_lambda.py").exists()
    [dist] = built.glob("asyncflow_durable-*.dist-info")
    assert "asyncflow_durable" in dist.name


def test_the_built_handler_runs_on_s3(built: Path, aws: Aws) -> None:
    [run_] = invoke(built, aws.new_s3_url(), aws.endpoint)
    assert (run_["workflow"], run_["status"], run_["logs"]) == ("remind", "paused", ["noted: hi"])


def test_the_built_handler_runs_on_dynamodb(built: Path, aws: Aws) -> None:
    [run_] = invoke(built, aws.new_dynamodb_url(), aws.endpoint)
    assert (run_["workflow"], run_["status"]) == ("remind", "paused")


def test_the_built_handler_runs_on_dynalite(built: Path, dynalite: Aws) -> None:
    [run_] = invoke(built, dynalite.new_dynamodb_url(), dynalite.endpoint)
    assert (run_["workflow"], run_["status"]) == ("remind", "paused")
