"""One list of backends by URL scheme (asyncflow/_backends/__init__.py), read by setup()'s URLs,
the lazy ``asyncflow.<Name>Backend`` exports and the CLI; the aws extra; botocore's errors kept
as the cause of asyncflow's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from asyncflow import Backend
from asyncflow._backends import BACKENDS, WRAPPERS
from asyncflow._cli import main, store_name

URLS = {
    "memory": "memory:",
    "file": "file:{tmp}/runs",
    "s3": "s3://bucket/some/prefix",
    "dynamodb": "dynamodb://table",
}


def test_every_scheme_opens_its_backend_and_gives_its_url_back(tmp_path: Path) -> None:
    assert sorted(URLS) == sorted(b.scheme for b in BACKENDS)
    for registered in BACKENDS:
        url = URLS[registered.scheme].format(tmp=tmp_path)
        backend = asyncflow.setup(url).backend
        assert type(backend) is getattr(asyncflow, registered.name)
        assert backend.url() == url
        # The URL a command reports is one that opens the same store again.
        assert store_name(backend) == url
        assert asyncflow.setup(store_name(backend)).backend.url() == url


def test_the_exports_are_the_registered_backends() -> None:
    exported = {
        name for name in asyncflow.__all__ if name.endswith("Backend") and name != "Backend"
    }
    assert exported == {b.name for b in (*BACKENDS, *WRAPPERS)}
    for registered in (*BACKENDS, *WRAPPERS):
        cls = getattr(asyncflow, registered.name)
        assert issubclass(cls, Backend)
        assert cls.__module__ == "asyncflow"


def test_the_cli_help_and_the_errors_list_every_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(asyncflow.setup("memory:"), ["--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    with pytest.raises(asyncflow.ConfigError) as info:
        asyncflow.setup("redis://x")
    for registered in BACKENDS:
        assert registered.form in help_text
        assert repr(registered.form) in str(info.value)


def test_a_backend_of_ones_own_names_its_store_by_its_url() -> None:
    class Mine(asyncflow.MemoryBackend):
        def url(self) -> str:
            return "mine://here"

    assert store_name(Mine()) == "mine://here"

    class Unnamed(asyncflow.MemoryBackend):
        def url(self) -> None:
            return None

        def __repr__(self) -> str:
            return "<unnamed>"

    assert store_name(Unnamed()) == "<unnamed>"


def test_the_lease_backends_say_so() -> None:
    # The engine tells lease backends apart by this attribute: it must agree with which
    # backends end a claim in their last write (what it looked at before).
    backends: list[Backend] = [
        asyncflow.MemoryBackend(),
        asyncflow.FileBackend("unused"),
        asyncflow.S3Backend("bucket"),
        asyncflow.DynamoDBBackend("table"),
    ]
    for backend in backends:
        overrides = type(backend).write_and_release is not Backend.write_and_release
        assert backend.leased_claims is overrides
    assert [b.leased_claims for b in backends] == [False, False, True, True]


# -- without the aws extra -----------------------------------------------------------------------

# A fresh interpreter in which aiobotocore and botocore cannot be imported, as where the aws
# extra is not installed.
_WITHOUT_AWS = textwrap.dedent(
    """
    import sys

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("aiobotocore", "botocore"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    import asyncflow

    def refused(give):
        try:
            give()
        except asyncflow.ConfigError as exc:
            assert isinstance(exc.__cause__, ModuleNotFoundError), exc.__cause__
            print(exc)
        else:
            raise AssertionError("not refused")

    refused(lambda: asyncflow.setup("s3://bucket/prefix"))
    refused(lambda: asyncflow.setup("dynamodb://table"))
    refused(lambda: asyncflow.S3Backend)
    asyncflow.setup("memory:")  # the others need nothing more
    """
)


@pytest.mark.procs
def test_without_the_aws_extra_the_aws_backends_name_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AWS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "pip install 'asyncflow-durable[aws]'" in line
        assert "aiobotocore" in line or "botocore" in line
    assert "s3://<bucket>/<prefix>" in lines[0]
    assert "dynamodb://<table>" in lines[1]


@pytest.mark.procs
def test_without_the_aws_extra_the_cli_says_which_extra(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        _WITHOUT_AWS.split("import asyncflow", 1)[0]
        + "import asyncflow\nflow = asyncflow.setup('memory:')\nflow.cli()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), "--backend", "s3://bucket/p", "runs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "pip install 'asyncflow-durable[aws]'" in done.stderr


# -- botocore's exceptions kept as the cause (a network failure: test_aws_backends) ------------


@pytest.mark.anyio
async def test_a_missing_region_keeps_botocores_exception_as_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import NoRegionError

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    backend = asyncflow.DynamoDBBackend("table")
    with pytest.raises(asyncflow.ConfigError, match="no AWS region") as info:
        await backend.open()
    assert isinstance(info.value.__cause__, NoRegionError)


@pytest.mark.anyio
async def test_an_error_response_keeps_botocores_exception_as_the_cause(aws: Any) -> None:
    from botocore.exceptions import ClientError

    backend = asyncflow.S3Backend("no-such-bucket-here", endpoint_url=aws.endpoint)
    await backend.open()
    try:
        with pytest.raises(asyncflow.BackendError, match="does not exist") as info:
            await backend.list("ns")
    finally:
        await backend.aclose()
    assert isinstance(info.value.__cause__, ClientError)


def test_a_url_with_packs_keeps_the_runs_in_packs_of_that_store(tmp_path: Path) -> None:
    for url in ("memory:?packs=8", f"file:{tmp_path}?packs=256"):
        backend = asyncflow.setup(url).backend
        assert isinstance(backend, asyncflow.PackedBackend)
        assert backend.url() == url, "the URL a command reports opens the same store again"
        assert type(backend.inner).__name__ in ("MemoryBackend", "FileBackend")
    with pytest.raises(asyncflow.ConfigError, match="power of two"):
        asyncflow.setup("memory:?packs=100")
    with pytest.raises(asyncflow.ConfigError, match="packs must be"):
        asyncflow.setup("memory:?packs=0")
