"""Every failure, a page at a time: ``imgrag failures`` and ``GET /failures`` read the journal
one page per request (bounded at any size), newest first; status keeps only the newest ten."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from imgrag.pipeline.api import create_api
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.metrics import Metrics

from tests.test_cli import env, imgrag  # noqa: F401 - env is a fixture

N = 120


def _fail_many(core: Core) -> None:
    journal = core.open_journal()
    try:
        for i in range(N):
            journal.record(f"bad/{i:03d}.png", f"sig{i}", "permanent", "undecodable", f"no. {i}")
    finally:
        journal.close()


@pytest.fixture
def core(env: Path) -> Core:  # noqa: F811 - the fixture imported above
    core = Core.build(load_settings(None))
    _fail_many(core)
    return core


async def test_pages_cover_every_failure_once_newest_first(core: Core) -> None:
    door = LocalDoor(core)
    try:
        seen: list[str] = []
        offset = 0
        while True:
            page = await door.failures(offset, 50)
            assert page.total == N and len(page.failures) <= 50
            if not page.failures:
                break
            seen += [f.path for f in page.failures]
            offset += len(page.failures)
        assert len(seen) == N == len(set(seen))
        assert seen[0] == "bad/119.png"  # the newest first
        assert (await door.status()).failed == N
        assert len((await door.status()).failures) == 10
    finally:
        await door.aclose()


async def test_the_api_serves_a_bounded_page_and_refuses_bad_bounds(core: Core) -> None:
    door = LocalDoor(core)
    app = create_api(door, Metrics(door.status_now), None)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            r = await http.get("/failures", params={"offset": "110", "limit": "50"})
            assert r.status_code == 200
            page = r.json()
            assert page["total"] == N and len(page["failures"]) == 10
            assert page["failures"][-1]["path"] == "bad/000.png"
            for bad in ({"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"limit": "ten"},
                        {"limit": "\u00b2"}, {"offset": "9" * 30}):  # fmt: skip
                r = await http.get("/failures", params=bad)
                assert r.status_code == 400, bad
                assert r.json()["kind"] == "QueryError"
    finally:
        await door.aclose()


def test_the_cli_pages_and_says_how_to_see_more(core: Core) -> None:
    shown = imgrag("failures", "--limit", "2")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"{N} failed; showing 1-2, newest first"
    assert lines[1].startswith("  bad/119.png: undecodable: no. 119")
    assert lines[-1] == "more: imgrag failures --offset 2"
    last = json.loads(imgrag("failures", "--offset", "119", "--json").output)
    assert [f["path"] for f in last["failures"]] == ["bad/000.png"] and last["total"] == N
