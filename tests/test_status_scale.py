"""Status at any size: a ``/status`` request and a ``/metrics`` scrape read kept counts.

The daemon runs in this process (``run_watch``, its API on loopback, the real embedded store,
the emulator) so the test can count what a request costs: every folder walk and every read
of all the points. Pending that is not live says how old it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.emulator.faults import InjectedFault
from imgrag.connectors.stores.edge import EdgeIndex
from imgrag.pipeline import candidates, source_folder, status
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.daemon_client import read_daemon_file
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.runtime import open_reader
from imgrag.pipeline.watch import Hooks, run_watch
from prometheus_client.parser import text_string_to_metric_families

from tests import images_factory as f
from tests.test_cli_ingest import AUTH, cli_settings, imgrag


class Calls:
    """How many folder walks and whole-index reads happened."""

    def __init__(self) -> None:
        self.walks = 0
        self.reads = 0

    def reset(self) -> None:
        self.walks = self.reads = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every walk of a folder (the walkers, under every name they are imported as) and
    every read of the points' file facts is counted."""
    seen = Calls()

    def counted(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            setattr(seen, what, getattr(seen, what) + 1)
            return fn(*args, **kwargs)

        return wrapper

    for module in (candidates, status, source_folder):
        for name in ("walk", "walk_rows"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted(getattr(module, name), "walks"))
    monkeypatch.setattr(EdgeIndex, "file_states", counted(EdgeIndex.file_states, "reads"))
    return seen


@pytest.fixture
def settings_env(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    env = {
        **cli_settings(tmp_path, emulator),
        "IMGRAG_API__PORT": "0",
        "IMGRAG_INGEST__SETTLE_SECONDS": "0.2",
        "IMGRAG_INGEST__RESCAN_MINUTES": "0",  # no periodic walk: every walk is a request's
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield tmp_path


async def until(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The first ``/status`` for which ``check`` holds (polled, with a deadline)."""
    deadline = time.monotonic() + 60
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = (await client.get("/status")).json()
        if check(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


@contextlib.asynccontextmanager
async def daemon(core: Core, root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """``imgrag watch ROOT`` in this process; a client of its API; SIGTERM at the end."""
    task = asyncio.create_task(run_watch(core, [root], hooks=Hooks()))
    deadline = time.monotonic() + 60
    while (info := read_daemon_file(core.paths.daemon)) is None or not info.port:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the daemon did not start"
        await asyncio.sleep(0.05)
    try:
        async with httpx.AsyncClient(base_url=info.url, timeout=30, headers=AUTH) as client:
            yield client
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own handler: it flushes
        await asyncio.wait_for(task, 60)


def truth(core: Core, name: str) -> int:
    """Pending as the one definition says, walked and read now (after the daemon stopped)."""
    reader = open_reader(core)
    try:
        known = {s.path: s for s in reader.index.file_states(source=name)}
        entry = core.registry.get(name)
        assert entry is not None
        with contextlib.closing(core.open_journal()) as journal:
            return status.count_pending(Path(entry.root), core.rules, known, journal.scoped(name))
    finally:
        asyncio.run(reader.aclose())


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in the scrape")


def test_status_and_metrics_walk_nothing_and_read_no_point_and_stay_right(
    settings_env: Path, emulator: EmulatorHandle, calls: Calls
) -> None:
    root = settings_env / "inbox"
    for i in range(3):
        f.save(f.photo(i), root / f"p{i}.png", "PNG")
    core = Core.build(load_settings())

    async def scenario() -> dict[str, Any]:
        async with daemon(core, root) as client:
            s = await until(client, lambda s: s["indexed"] == 3 and s["pending_live"], "start")
            calls.reset()

            def settled(indexed: int, failed: int) -> Callable[[dict[str, Any]], bool]:
                return lambda s: (s["indexed"], s["pending"], s["failed"]) == (indexed, 0, failed)

            async def asked() -> dict[str, Any]:
                """One /status and one /metrics; they agree; nothing walked, nothing read."""
                report = (await client.get("/status")).json()
                scrape = (await client.get("/metrics")).text
                assert (calls.walks, calls.reads) == (0, 0)
                assert metric(scrape, "imgrag_files_indexed") == report["indexed"]
                assert metric(scrape, "imgrag_files_pending") == report["pending"]
                assert metric(scrape, "imgrag_files_failed") == report["failed"]
                return report

            assert (await asked())["pending"] == 0
            # Added: a good file and a broken one.
            f.save(f.photo(7), root / "new.png", "PNG")
            (root / "broken.png").write_text("not a png")
            await until(client, settled(4, 1), "the new files")
            s = await asked()
            assert (s["indexed"], s["pending"], s["failed"]) == (4, 0, 1)
            # Removed: an indexed file and the failed one.
            (root / "p0.png").unlink()
            (root / "broken.png").unlink()
            await until(client, settled(3, 0), "the removal")
            s = await asked()
            assert (s["indexed"], s["pending"], s["failed"]) == (3, 0, 0)
            # Failed for a passing reason (the service answers 503): pending and failed.
            emulator.state.faults.push(InjectedFault(status=503), 10_000)  # type: ignore[attr-defined]
            f.save(f.photo(8), root / "later.png", "PNG")
            await until(client, lambda s: s["failed"] == 1, "the transient failure")
            s = await asked()
            assert (s["indexed"], s["pending"], s["failed"]) == (3, 1, 1)
            assert s["failed_by_reason"] == {"embedder_unavailable": 1}
            assert s["sources"][0]["pending_live"] and s["pending_live"]
            return s

    last = asyncio.run(scenario())
    emulator.state.faults.clear()  # type: ignore[attr-defined]
    assert last["pending"] == truth(core, last["sources"][0]["name"])


def test_pending_of_a_source_nobody_watches_says_its_age(
    settings_env: Path, emulator: EmulatorHandle, calls: Calls
) -> None:
    """``imgrag serve``'s door: one walk in the background, its time in every report; a
    report never walks (the walk is not per request)."""
    root = settings_env / "inbox"
    for i in range(3):
        f.save(f.photo(i), root / f"p{i}.png", "PNG")
    assert imgrag("ingest", str(root), env=dict(os.environ)).returncode == 0
    f.save(f.photo(5), root / "unseen.png", "PNG")  # on disk, not indexed: pending 1
    core = Core.build(load_settings())

    async def scenario() -> None:
        async with LocalDoor(core, reader=open_reader(core)) as door:
            door.keep_counts()
            survey = door.survey()
            assert survey is not None
            survey.wait(60)
            calls.reset()
            reports = [door.status_now() for _ in range(5)]
            assert (calls.walks, calls.reads) == (0, 0)
            assert survey.taken == 1
            r = reports[-1]
            assert (r.indexed, r.pending) == (3, 1)
            assert not r.pending_live and r.pending_as_of is not None
            assert r.pending_age is not None and r.pending_age >= 0
            assert not r.sources[0].pending_live
            assert "pending as of" in r.pending_words()
            f.save(f.photo(6), root / "newer.png", "PNG")
            again = door.status_now()
            assert again.pending == 1  # the walk's count, and it says so: not live, dated
            assert again.pending_as_of == r.pending_as_of

    asyncio.run(scenario())


def test_the_daemon_dates_the_pending_of_a_source_it_does_not_watch_and_the_cli_says_so(
    settings_env: Path, emulator: EmulatorHandle
) -> None:
    watched, other = settings_env / "watched", settings_env / "other"
    f.save(f.photo(1), watched / "a.png", "PNG")
    f.save(f.photo(2), other / "b.png", "PNG")
    assert imgrag("ingest", str(other), env=dict(os.environ)).returncode == 0
    f.save(f.photo(3), other / "c.png", "PNG")  # not indexed: pending 1, nobody watching
    core = Core.build(load_settings())

    async def scenario() -> tuple[dict[str, Any], str]:
        async with daemon(core, watched) as client:
            s = await until(
                client,
                lambda s: (
                    s["indexed"] == 2
                    and s["pending"] == 1
                    and all(x["pending_as_of"] or x["pending_live"] for x in s["sources"])
                ),
                "the walk of the other source",
            )
            run = await asyncio.to_thread(imgrag, "status", env=dict(os.environ))
            assert run.returncode == 0, run.stderr
            return s, run.stdout

    s, printed = asyncio.run(scenario())
    by_name = {x["name"].rsplit("-", 1)[0]: x for x in s["sources"]}
    assert by_name["watched"]["pending_live"] and not by_name["other"]["pending_live"]
    assert by_name["other"]["pending"] == 1 and by_name["other"]["indexed"] == 1
    assert not s["pending_live"] and s["pending_age"] is not None
    assert "1 pending as of" in printed
    assert by_name["watched"]["pending"] == 0
    assert ": 1 indexed, 1 pending as of " in printed  # the other source's line


def test_the_cli_prints_the_age_of_a_pending_count_that_is_not_live() -> None:
    report = status.StatusReport(
        indexed=3, pending=2, failed=0, pending_live=False, pending_as_of=time.time() - 12
    )
    assert report.pending_words() in {f"2 pending as of {n} s ago" for n in (12, 13)}
    unknown = status.pending_words(0, False, None)
    assert "not counted yet" in unknown
    assert status.pending_words(5, True, None) == "5 pending"
