"""One file is one file's problem: hostile files, names, sidecars and links never stop a
pass, and every candidate ends indexed or journaled with a reason."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgrag import StoreError
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.candidates import walk
from imgrag.pipeline.daemon_client import read_daemon_file

from tests import hostile_factory as h
from tests import images_factory as f
from tests.ingest_harness import Pipeline, pipeline
from tests.test_cli_ingest import cli_env, images_embedded, imgrag, spawn_imgrag

# Pillow still reads and writes IM files, and says each time that it will stop.
pytestmark = pytest.mark.filterwarnings("ignore:IM image format:DeprecationWarning")


def good(root: Path, n: int = 3) -> list[str]:
    for i in range(n):
        f.save(f.photo(i), root / f"good{i}.png", "PNG")
    return [f"good{i}.png" for i in range(n)]


def outcomes(p: Pipeline) -> tuple[set[str], dict[str, str]]:
    """(indexed paths, journaled path → reason)."""
    journaled = {x.path: x.reason for x in p.runtime.journal.recent(limit=100_000)}
    return set(p.paths()), journaled


def assert_every_candidate_accounted_for(p: Pipeline) -> tuple[set[str], dict[str, str]]:
    candidates = {s.rel for s in walk(p.root, p.ingestor.rules)}
    indexed, journaled = outcomes(p)
    assert indexed.isdisjoint(journaled), indexed & set(journaled)
    assert candidates == indexed | set(journaled)
    assert set(journaled.values()) <= h.REASONS
    return indexed, journaled


# -- each finding of the issue: one file that used to stop everything ----------------------


def _mode1(root: Path) -> str:
    h.mode1_png_with_trns(root / "bw.png")
    return "bw.png"


def _dds(root: Path) -> str:
    h.dds_unknown_pixel_format(root / "scan.jpg")
    return "scan.jpg"


def _tiff16b(root: Path) -> str:
    h.tiff16_big_endian(root / "deep.tif")
    return "deep.tif"


def _bad_utf8(root: Path) -> str:
    name = os.fsdecode(b"caf\xe9.png")
    f.save(f.photo(9), root / name, "PNG")
    return "caf\\xe9.png"


def _nan_sidecar(root: Path) -> str:
    f.save(f.photo(9), root / "nan.png", "PNG")
    (root / "nan.json").write_text('{"v": NaN}')
    return "nan.png"


def _deep_sidecar(root: Path) -> str:
    f.save(f.photo(9), root / "deep.png", "PNG")
    (root / "deep.json").write_text("[" * 30_000 + "]" * 30_000)
    return "deep.png"


def _loops(root: Path) -> str:
    h.symlink_loop(root / "links")
    return ""


FINDINGS: dict[str, tuple[Callable[[Path], str], str | None]] = {
    "mode-1-trns": (_mode1, None),
    "dds-named-jpg": (_dds, "unsupported_format"),
    "tiff-I;16B": (_tiff16b, None),
    "invalid-utf8-name": (_bad_utf8, None),
    "nan-sidecar": (_nan_sidecar, "bad_sidecar"),
    "deep-sidecar": (_deep_sidecar, "bad_sidecar"),
    "symlink-loops": (_loops, None),
}


@pytest.mark.parametrize("finding", sorted(FINDINGS))
async def test_one_hostile_file_stops_nothing(
    tmp_path: Path, emulator: EmulatorHandle, finding: str
) -> None:
    make, reason = FINDINGS[finding]
    async with pipeline(tmp_path, emulator) as p:
        names = good(p.root)  # innocent files, in the same batches as the hostile one
        rel = make(p.root)
        summary = await p.ingestor.reconcile()
        indexed, journaled = assert_every_candidate_accounted_for(p)
        assert set(names) <= indexed
        if rel and reason is None:
            assert rel in indexed and summary.failed == 0
        elif rel:
            assert journaled == {rel: reason} and summary.failed_by_reason == {reason: 1}
        again = await p.ingestor.reconcile()
        assert again.requests == 0 and again.indexed + again.reused == 0


async def test_an_odd_name_is_stored_displayable_and_stays_put(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        paths = h.odd_name_paths(p.root)
        summary = await p.ingestor.reconcile()
        assert summary.indexed == len(paths) and summary.failed == 0
        payloads = p.points()
        assert payloads["caf\\xe9-\\xff.png"]["filename"] == "caf\\xe9-\\xff.png"
        json.dumps(payloads, ensure_ascii=False).encode("utf-8")  # all valid text
        again = await p.ingestor.reconcile()
        assert (again.unchanged, again.removed, again.requests) == (len(paths), 0, 0)
        os.unlink(paths["invalid_utf8"])  # its point goes when the file goes
        gone = await p.ingestor.reconcile()
        assert gone.removed == 1 and "caf\\xe9-\\xff.png" not in p.paths()


async def test_a_store_refusing_one_point_costs_only_that_point(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue finding: one bad point poisoned its whole upsert batch. The store here is the
    real engine behind a fault: it refuses any batch holding ``poison.png``'s point, as the
    embedded store does a payload it cannot take."""
    async with pipeline(tmp_path, emulator) as p:
        names = good(p.root, 12)
        f.save(f.photo(99), p.root / "poison.png", "PNG")
        index = p.runtime.index
        real_upsert = index.upsert
        calls: list[int] = []

        def upsert(points):  # type: ignore[no-untyped-def]
            calls.append(len(points))
            if any(pt.payload["path"] == "poison.png" for pt in points):
                raise StoreError("embedded store upsert rejected the batch: bad payload")
            real_upsert(points)

        monkeypatch.setattr(index, "upsert", upsert)
        summary = await p.ingestor.reconcile()
        indexed, journaled = assert_every_candidate_accounted_for(p)
        assert indexed == set(names) and journaled == {"poison.png": "store_rejected"}
        assert summary.failed_by_reason == {"store_rejected": 1}
        assert sum(calls) < 13 * 6  # split by halves, not retried point by point forever


async def test_a_named_store_error_is_the_batchs_not_split(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A StoreError subclass (a store condition such as a full disk) is not a bad point:
    the batch is not split, its files stay pending (transient), none is blamed for good."""

    class StoreFull(StoreError):
        pass

    async with pipeline(tmp_path, emulator) as p:
        names = good(p.root, 4)
        calls: list[int] = []

        def upsert(points):  # type: ignore[no-untyped-def]
            calls.append(len(points))
            raise StoreFull("no space left")

        monkeypatch.setattr(p.runtime.index, "upsert", upsert)
        summary = await p.ingestor.reconcile()
        assert summary.failed_by_reason == {"store_unavailable": 4} and summary.pending == 4
        assert sorted(p.runtime.journal.transient_paths()) == names
        assert sum(calls) == 4  # each point offered once, never split


async def test_an_unexpected_exception_is_that_files_internal_error(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit by one file (here: the header reader raising KeyError for it) is journaled
    as internal_error with the exception's message; the pass goes on."""
    from imgrag.pipeline import ingest

    real_probe = ingest.probe

    def probe(raw: bytes):  # type: ignore[no-untyped-def]
        if raw == target:
            raise KeyError("no such tag")
        return real_probe(raw)

    async with pipeline(tmp_path, emulator) as p:
        names = good(p.root)
        target = f.save(f.photo(50), p.root / "bug.png", "PNG").read_bytes()
        monkeypatch.setattr(ingest, "probe", probe)
        summary = await p.ingestor.reconcile()
        assert set(names) == set(p.paths())
        failure = p.runtime.journal.recent()[0]
        assert (failure.path, failure.reason) == ("bug.png", "internal_error")
        assert "KeyError" in failure.message and "no such tag" in failure.message
        assert summary.failed_by_reason == {"internal_error": 1}


async def test_a_sidecar_linked_to_a_secret_is_never_read_stored_or_sent(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """Issue finding: photo.txt → /etc/passwd became the caption, was returned by search and
    sent to Azure with the image. Here the secret is a file outside the folder."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-CAPTION")
    async with pipeline(tmp_path, emulator) as p:
        good(p.root, 1)
        f.save(f.photo(3), p.root / "photo.png", "PNG")
        os.symlink(secret, p.root / "photo.txt")
        summary = await p.ingestor.reconcile()
        assert summary.failed_by_reason == {"bad_sidecar": 1}
        assert "SECRET" not in json.dumps(p.points())
        sent = [t for r in emulator.state.requests for t in (r.text_inputs or [])]
        assert not any("SECRET" in str(t) for t in sent)
        assert "outside the folder" in p.runtime.journal.recent()[0].message


# -- the generated corpus ------------------------------------------------------------------


def _variant(draw: st.DrawFn, root: Path, i: int) -> None:
    mode = draw(st.sampled_from(h.MODES))
    fmt = draw(st.sampled_from(("PNG", "TIFF", "GIF", "JPEG", "WEBP", "BMP", "ICO")))
    raw = h.encoded(
        mode,
        fmt,
        size=draw(st.tuples(st.integers(1, 48), st.integers(1, 48))),
        transparency=draw(st.booleans()),
        palette=draw(st.booleans()),
        icc=draw(st.sampled_from((None, "srgb", "garbage"))),
        orientation=draw(st.one_of(st.none(), st.integers(1, 8))),
    )
    if raw is None:
        raw = f.jpeg_bytes(f.photo(i))
    if draw(st.booleans()):  # damaged: cut short, or header bytes flipped
        cut = draw(st.integers(0, len(raw)))
        data = bytearray(raw[:cut])
        for offset in draw(st.lists(st.integers(0, 31), max_size=3)):
            if offset < len(data):
                data[offset] ^= 0xA5
        raw = bytes(data)
    ext = draw(st.sampled_from(("jpg", "png", "tif", "gif", "webp")))
    name = draw(
        st.sampled_from(
            (f"v{i}.{ext}".encode(), f"caf\xe9{i}.{ext}".encode("latin-1"),
             f"nl\n{i}.{ext}".encode(), b"n" * 240 + f"{i:03d}.{ext}".encode())
        )
    )  # fmt: skip
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), name)))
    path.write_bytes(raw)
    sidecar = draw(
        st.sampled_from((None, b'{"v": NaN}', b"[" * 5000, b'{"tags": ["a"]}', b"caption", "fifo"))
    )
    if sidecar == "fifo":
        h.fifo(path.with_suffix(".txt"))
    elif isinstance(sidecar, bytes):
        suffix = ".txt" if sidecar == b"caption" else ".json"
        path.with_suffix(suffix).write_bytes(sidecar)


@st.composite
def corpora(draw: st.DrawFn) -> Callable[[Path], None]:
    steps = draw(st.lists(st.integers(0, 2**16), min_size=3, max_size=8))
    renamed = draw(st.lists(st.sampled_from(sorted(h.RENAMED)), max_size=3, unique=True))
    loops = draw(st.booleans())

    def build(root: Path) -> None:
        for i, _ in enumerate(steps):
            _variant(draw, root, i)

    # Draw everything now: hypothesis draws only while the strategy runs.
    made: list[Callable[[Path], None]] = []
    buffer = tempfile.mkdtemp(prefix="corpus-")
    build(Path(buffer))
    for kind in renamed:
        made.append(lambda root, kind=kind: h.RENAMED[kind](root / f"renamed-{kind}.jpg"))
    if loops:
        made.append(lambda root: h.symlink_loop(root / "links"))

    def realize(root: Path) -> None:
        for entry in os.listdir(buffer):
            source = os.path.join(buffer, entry)
            if os.path.isfile(source) and not os.path.islink(source):
                shutil.copy(source, os.path.join(root, entry))
            else:
                os.mkfifo(os.path.join(root, entry))
        shutil.rmtree(buffer, ignore_errors=True)
        for step in made:
            step(root)

    return realize


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corpus=corpora())
async def test_a_generated_hostile_corpus(
    tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorHandle, corpus
) -> None:  # type: ignore[no-untyped-def]
    """Whatever the corpus: the pass ends, every candidate is indexed or journaled with a
    reason, and a second pass makes no request."""
    emulator.state.reset()
    tmp = tmp_path_factory.mktemp("corpus")
    async with pipeline(tmp, emulator) as p:
        good(p.root, 2)
        corpus(p.root)
        await p.ingestor.reconcile()
        indexed, _ = assert_every_candidate_accounted_for(p)
        assert {"good0.png", "good1.png"} <= indexed
        again = await p.ingestor.reconcile()
        assert again.requests == 0 and again.indexed + again.reused == 0


# -- the whole corpus through the command line and the daemon -----------------------------


def journal_of(tmp_path: Path) -> dict[str, str]:
    from imgrag.pipeline.journal import Journal

    journal = Journal(tmp_path / "state" / "journal.sqlite")
    try:
        return {x.path: x.reason for x in journal.recent(limit=100_000)}
    finally:
        journal.close()


def check_outcomes(expect: dict[str, str | None], indexed: set[str], journaled: dict[str, str]):  # type: ignore[no-untyped-def]
    assert indexed.isdisjoint(journaled)
    assert set(expect) == indexed | set(journaled)
    for rel, want in expect.items():
        if want is None:
            assert rel in indexed, (rel, journaled.get(rel))
        elif want != h.ANY:
            assert journaled.get(rel) == want, (rel, journaled.get(rel))
    assert set(journaled.values()) <= h.REASONS


def test_imgrag_ingest_takes_the_whole_hostile_corpus(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    expect = h.build_corpus(root)
    env = cli_env(tmp_path, emulator)
    run = imgrag("ingest", str(root), "--json", env=env, timeout=240)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    summary = json.loads(run.stdout)
    journaled = journal_of(tmp_path)
    indexed_n = summary["indexed"] + summary["reused"]
    assert indexed_n + summary["failed"] == len(expect)
    status = imgrag("status", str(root), "--json", env=env)
    report = json.loads(status.stdout)
    assert report["indexed"] == indexed_n and report["pending"] == 0
    indexed = set(expect) - set(journaled)
    check_outcomes(expect, indexed, journaled)
    # A name with a newline or an escape sequence cannot forge a line of the status or logs.
    text = imgrag("status", str(root), env=env).stdout
    assert not any(line.startswith("ERROR forged") for line in text.splitlines())
    assert "\x1b" not in text and "\x1b" not in run.stderr
    for line in run.stderr.splitlines():
        assert not line.lstrip().startswith("ERROR forged")
    requests = _embedding_requests(emulator)
    again = imgrag("ingest", str(root), "--json", env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["requests"] == 0 and rerun["indexed"] + rerun["reused"] == 0
    assert _embedding_requests(emulator) == requests + 1  # only the start-up probe


def test_a_401_mid_run_stops_ingest_with_one_line(tmp_path: Path, emulator: EmulatorHandle) -> None:
    """The key is revoked after the start-up probe, in the middle of the run: the command
    stops with one line naming the fix (exit 1), and no file is blamed for it.

    Foundry answers 401 for a key it does not accept (Azure AI Model Inference REST
    reference: 'Unauthorized'); the client raises CredentialError after a refresh that
    cannot help a static key."""
    root = tmp_path / "inbox"
    for i in range(12):
        f.save(f.photo(i, (48, 32)), root / f"p{i}.png", "PNG")
    emulator.state.options.latency_ms = 60
    env = cli_env(tmp_path, emulator)
    proc = spawn_imgrag("ingest", str(root), env=env)
    try:
        emulator.state.wait_for(
            lambda s: images_embedded(emulator) >= 3,
            timeout=60,
        )
        emulator.state.inject(401, count=1000)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "AZURE_INFERENCE_CREDENTIAL" in lines[0] and "Traceback" not in err
    assert journal_of(tmp_path) == {}


def test_a_daemon_receiving_the_hostile_corpus_stays_healthy(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    from tests.test_daemon_api import spawn_watch, status_of, wait_for

    root = tmp_path / "inbox"
    root.mkdir()
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_INGEST__SETTLE_SECONDS="0.2")
    log = tmp_path / "daemon.log"
    proc = spawn_watch(root, env, log)
    try:
        state = tmp_path / "state" / "daemon.json"
        wait_for(lambda: read_daemon_file(state) is not None or proc.poll() is not None)
        info = read_daemon_file(state)
        assert info is not None, log.read_text()
        expect = h.build_corpus(root)  # dropped into the watched folder

        last: list[object] = [None]

        def settled() -> bool:
            status = last[0] = status_of(info.url) or {}
            done = int(status.get("indexed", 0)) + int(status.get("failed", 0))  # type: ignore[call-overload]
            return done == len(expect) and status.get("pending") == 0

        try:
            wait_for(settled, timeout=60, what="the corpus to be indexed or journaled")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(expect)} files, last status {last[0]}") from None
        assert proc.poll() is None, log.read_text()
        assert httpx.get(f"{info.url}/health", timeout=5).json()["status"] == "ok"
        before = int((status_of(info.url) or {})["indexed"])  # type: ignore[call-overload]
        f.save(f.photo(123), root / "after.png", "PNG")
        wait_for(
            lambda: (status_of(info.url) or {}).get("indexed") == before + 1,
            timeout=5,
            what="a good file dropped after the corpus",
        )
        journaled = journal_of(tmp_path)
        indexed = set(expect) - set(journaled)
        check_outcomes(expect, indexed, journaled)
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _embedding_requests(emulator: EmulatorHandle) -> int:
    """Requests that embed something (the start-up ``GET /info`` is free)."""
    return sum(1 for r in emulator.state.requests if r.route != "info")
