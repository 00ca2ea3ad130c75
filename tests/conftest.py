from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import asyncflow
from asyncflow.testing import MockClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(params=["memory", "file"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty backend of each kind this package ships."""
    return "memory:" if request.param == "memory" else f"file:{tmp_path / 'store'}"


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def make_flow(backend_url: str, clock: MockClock) -> Callable[..., asyncflow.Flow]:
    """Flows on one shared backend, as successive invocations of one script would see it.

    The memory backend lives in one object, so its flows share that object; file flows share
    the folder.
    """
    memory = asyncflow.MemoryBackend()

    def make(**kwargs: object) -> asyncflow.Flow:
        kwargs.setdefault("clock", clock)
        backend = memory if backend_url == "memory:" else backend_url
        return asyncflow.setup(backend, **kwargs)  # type: ignore[arg-type]

    return make
