"""Names on the file backend (issue 9, point 8): names that differ only in case (in all of
Unicode) or in Unicode normalization stay apart even on file systems that ignore both (macOS,
Windows shares); long names work; stores written by earlier versions stay readable."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

import asyncflow
from asyncflow import Context
from asyncflow._conformance import AWKWARD_NAMES

pytestmark = pytest.mark.anyio


async def test_no_two_names_share_a_file_on_a_case_and_normalization_insensitive_system(
    tmp_path: Path,
) -> None:
    backend = asyncflow.FileBackend(tmp_path)
    for i, name in enumerate(AWKWARD_NAMES):
        await backend.write(("ns", name), str(i).encode())
    files = [p.name for p in (tmp_path / "ns").iterdir()]
    assert len(files) == len(AWKWARD_NAMES)
    # What macOS (APFS, HFS+) and Windows consider the same name: case folded, normalized.
    folded = {unicodedata.normalize("NFD", f).casefold() for f in files}
    assert len(folded) == len(files), sorted(files)
    assert all(len(f.encode()) <= 255 for f in files)


@pytest.mark.parametrize("name", ["s" * 300, "名" * 84, "名" * 1000, "a/" * 200])
async def test_long_state_names_work_as_on_the_other_stores(tmp_path: Path, name: str) -> None:
    flow = asyncflow.setup(f"file:{tmp_path}")

    @flow.workflow()
    async def wf(c: Context) -> object:
        await c.set_state(name, {"n": 1})
        await c.set_state(name, {"n": 2})
        return await c.get_state(name)

    [result] = await flow.run("wf")
    assert (result.status, result.result) == ("succeeded", {"n": 2})
    assert await flow.get_state(name) == {"n": 2}
    assert list(await flow.backend.list("state")) == [name]
    [file] = (tmp_path / "state").iterdir()
    assert file.name.startswith("%%")
    assert name in json.loads(file.read_bytes().split(b"\n")[0].removeprefix(b"asyncflow-name "))


async def test_a_long_name_file_holding_another_name_is_not_used(tmp_path: Path) -> None:
    backend = asyncflow.FileBackend(tmp_path)
    name = "s" * 300
    await backend.write(("state", name), b"v")
    [file] = (tmp_path / "state").iterdir()
    file.write_bytes(b'asyncflow-name "' + b"t" * 300 + b'"\nv')
    with pytest.raises(asyncflow.DamagedRecordError, match="naming what it holds"):
        await backend.read(("state", name))
    assert await backend.list("state") == {}, "not listed under a name it does not hold"


async def test_a_store_written_before_unicode_names_were_escaped_stays_readable(
    tmp_path: Path,
) -> None:
    flow = asyncflow.setup(f"file:{tmp_path}")
    (tmp_path / "state").mkdir()
    # The file name an earlier asyncflow gave state "Été": its characters as they are.
    old = tmp_path / "state" / "Été.json"
    old.write_text(json.dumps({"asyncflow": "state", "name": "Été", "value": 1}))

    @flow.workflow()
    async def bump(c: Context) -> object:
        value = await c.get_state("Été")
        await c.set_state("Été", value + 1)
        return await c.get_state("Été")

    assert await flow.get_state("Été") == 1
    assert list(await flow.backend.list("state")) == ["Été"]
    [result] = await flow.run("bump")
    assert result.result == 2
    assert not old.exists(), "written over under its new file name"
    [new] = (tmp_path / "state").iterdir()
    assert new.name == "%C3%89t%C3%A9.json"
    assert await flow.get_state("Été") == 2
    assert list(await flow.backend.list("state")) == ["Été"]
