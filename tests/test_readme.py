"""The README's snippets and the emulator walkthrough run as pasted, and say what they print;
every relative link in README.md and docs/ resolves.

How a document marks its blocks (see docs/development.md):

- In the documents of ``RUN_DOCS``, every ```` ```sh ```` block runs with ``bash -e -o
  pipefail`` and every ```` ```python ```` block with the project's Python, in order, in one
  fresh folder per document that holds what a checkout holds (Makefile, configs, examples,
  tools and a ``.venv`` made of links to the running one). Other languages never run.
- ``<!-- readme-test: skip: REASON -->`` before a block: not run; the reason is required.
- ``<!-- readme-test: background until "TEXT" -->``: a long-running command (``make run``,
  the emulator). It starts in its own process group; the session waits until TEXT appears in
  its output, and at the end sends it SIGINT, as Ctrl+C would, and waits for it to exit;
  with ``stops with "TEXT"`` after it, TEXT must be in its output then.
- ``<!-- readme-test: output -->`` before a ```` ```text ```` block: the previous block's
  output (stdout, then stderr) holds each of its lines, in order. ``...`` matches anything;
  a decimal number matches any within 0.01 (the last digit of a score may differ between
  CPUs); runs of spaces match any run of spaces.

What the session changes, and why: the per-user directories point into the test's temporary
folder (conftest), the daemon's API port is 0 (``IMGRAG_API__PORT``; the port is found
through ``daemon.json``, as every command does), the terminal is 200 columns wide, and the
offline model's cache is prepared once for the module and copied in (the first start's
20 s model build is not what is tested; the cache is kept in ``build/``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parent.parent
RUN_DOCS = ("README.md", "docs/emulator.md")
CHECKOUT_FILES = ("Makefile", "pyproject.toml")
CHECKOUT_DIRS = ("configs", "examples", "tools")
RUN_LANGS = {"sh", "python"}

FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
DECIMAL = re.compile(r"\d+\.\d+")


@dataclass
class Block:
    """One fenced block: its language, code, the marker before it and its line number."""

    lang: str
    code: str
    marker: str | None
    line: int


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the ``readme-test`` marker (if any)
    on the nearest non-blank line above it."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        end = start + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        mark = MARKER.match(lines[above]) if above >= 0 else None
        code = "\n".join(lines[start + 1 : end]) + "\n"
        found.append(Block(m.group(1), code, mark.group(1) if mark else None, start + 1))
        i = end + 1
    return found


def expected_matches(expected: str, output: str) -> str | None:
    """None when ``output`` holds each line of ``expected`` in order (see the module
    docstring); else the first line that is missing."""
    out_lines = output.splitlines()
    cursor = 0
    for want in expected.splitlines():
        if not want.strip():
            continue
        numbers = [float(n) for n in DECIMAL.findall(want)]
        parts = []
        for piece in want.strip().split("..."):
            tokens = []
            for word in piece.split():
                chunks = DECIMAL.split(word)
                pattern = r"(\d+\.\d+)".join(re.escape(c) for c in chunks)
                tokens.append(pattern)
            parts.append(r"\s+".join(tokens))
        regex = re.compile(r".*?".join(parts))
        for index in range(cursor, len(out_lines)):
            m = regex.search(out_lines[index])
            if m and all(
                abs(float(g) - n) <= 0.01 for g, n in zip(m.groups(), numbers, strict=True)
            ):
                cursor = index + 1
                break
        else:
            return want
    return None


def free_port(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Background:
    """A long-running block: its process group and everything it printed so far."""

    proc: subprocess.Popen[bytes]
    out: bytearray = field(default_factory=bytearray)
    reader: threading.Thread | None = None
    stops_with: str | None = None
    """What the document says it prints when stopped with Ctrl+C."""

    def start_reader(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()

        def read() -> None:
            while chunk := os.read(fd, 4096):
                self.out.extend(chunk)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def wait_for(self, ready: str, where: str) -> None:
        """Until ``ready`` is printed; fail if the process exits first."""
        wait_until(
            lambda: ready in self.text() or self.proc.poll() is not None,
            timeout=240,
            what=f"{where}: {ready!r}",
        )
        assert ready in self.text(), f"{where} exited before {ready!r}:\n{self.text()}"

    def stop(self) -> None:
        """Ctrl+C: SIGINT to the whole process group; then wait for it to exit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError(f"did not stop on SIGINT within 60 s:\n{self.text()}") from None
        finally:
            if self.reader is not None:
                self.reader.join(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def start_background(code: str, folder: Path, env: dict[str, str]) -> Background:
    """``code`` under bash in its own process group (a terminal's job), output collected."""
    proc = subprocess.Popen(
        ["bash", "-c", code],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    job = Background(proc)
    job.start_reader()
    return job


@pytest.fixture(scope="module")
def model_cache() -> Path:
    """The offline model's cache (``cache/local``), built in a child process. It is kept in
    ``build/`` between runs: its files are keyed by every version that shapes them, and the
    first start's model build is not what these documents test."""
    pytest.importorskip("imgrag.connectors.local")
    cache = REPO / "build" / "test-model-cache"
    code = "import sys; from imgrag.connectors.local import LocalEmbedder as E; E(sys.argv[1])"
    run = subprocess.run(
        [sys.executable, "-c", code, str(cache)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"the offline model could not be built: {run.stderr[-2000:]}"
    return cache / "local"


def link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (the cache is about 100 MB), else a copy.
    The model's cache files are replaced by rename, never rewritten in place."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_checkout(folder: Path) -> None:
    """What a fresh checkout holds for the documents' commands, and a ``.venv`` that is the
    running environment (links to its folders; its own install stamps, newer than
    pyproject.toml and the source folders, so ``make run`` never reinstalls nor relinks)."""
    for name in CHECKOUT_FILES:
        shutil.copy2(REPO / name, folder / name)
    for name in CHECKOUT_DIRS:
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = folder / ".venv"
    venv.mkdir()
    prefix = Path(sys.prefix)
    for entry in ("bin", "lib", "lib64", "include"):
        if (prefix / entry).exists():
            (venv / entry).symlink_to(prefix / entry)
    shutil.copy2(prefix / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / ".installed-run").touch()
    (venv / ".installed-links").touch()  # never relinked from here: the links are the tests'


def session_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGRAG_", "MAKE"))}
    env.pop("AZURE_INFERENCE_CREDENTIAL", None)
    env.pop("AZURE_INFERENCE_ENDPOINT", None)
    env.update(IMGRAG_API__PORT="0", COLUMNS="200", HOME=str(home))
    return env


def run_document(doc: str, folder: Path, env: dict[str, str]) -> list[str]:
    """Run the document's blocks in ``folder``; the list of what ran, for the report."""
    background: list[Background] = []
    ran: list[str] = []
    last_output = ""
    try:
        for block in blocks(REPO / doc):
            where = f"{doc}:{block.line}"
            marker = block.marker or ""
            if marker.startswith("skip"):
                reason = marker.removeprefix("skip").lstrip(": ").strip()
                assert reason, f"{where}: a skipped block must say why (skip: REASON)"
                continue
            if marker == "output":
                assert block.lang == "text", f"{where}: an output block is ```text"
                missing = expected_matches(block.code, last_output)
                assert missing is None, (
                    f"{where}: the output shown is not what the block before it printed; "
                    f"missing {missing!r} in:\n{last_output}"
                )
                continue
            if block.lang not in RUN_LANGS:
                continue
            if marker.startswith("background"):
                m = re.fullmatch(r'background until "(.+?)"(?: stops with "(.+)")?', marker)
                assert m, f'{where}: write background until "TEXT" [stops with "TEXT"]'
                assert block.lang == "sh", f"{where}: only sh blocks run in the background"
                job = start_background(block.code, folder, env)
                job.stops_with = m.group(2)
                background.append(job)
                job.wait_for(m.group(1), where)
                last_output = job.text()
                ran.append(where)
                continue
            assert marker == "", f"{where}: unknown marker {marker!r}"
            argv = (
                ["bash", "-e", "-o", "pipefail", "-c", block.code]
                if block.lang == "sh"
                else [sys.executable, "-c", block.code]
            )
            run = subprocess.run(
                argv, cwd=folder, env=env, capture_output=True, text=True, timeout=180
            )
            last_output = run.stdout + run.stderr
            assert run.returncode == 0, (
                f"{where} exited {run.returncode}:\n{block.code}\n--- output:\n{last_output}"
            )
            ran.append(where)
    finally:
        for job in reversed(background):
            job.stop()
    for job in background:
        if job.stops_with is not None:
            assert job.stops_with in job.text(), (
                f"{doc}: after Ctrl+C, {job.stops_with!r} is not in:\n{job.text()}"
            )
    return ran


@pytest.fixture
def session(tmp_path: Path, model_cache: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh checkout folder, its environment, and the model cache in the state
    directory, where both the daemon and the emulator look."""
    for tool in ("bash", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the documents' commands need it")
    folder = tmp_path / "checkout"
    folder.mkdir()
    make_checkout(folder)
    (tmp_path / "home").mkdir()
    env = session_env(tmp_path / "home")
    state = Path(env["XDG_DATA_HOME"]) / "imgrag"
    shutil.copytree(model_cache, state / "cache" / "local", copy_function=link_or_copy)
    yield folder, env


def test_documents_run_as_pasted_in_reading_order(session: tuple[Path, dict[str, str]]) -> None:
    """The README (the daemon ``make run`` starts, the sample photos indexed, every search
    printing what the README shows), then the emulator walkthrough in the same checkout and
    state directory, as a reader goes: the quick start's index, made by the offline model,
    is there when the emulator's vectors arrive."""
    folder, env = session
    ran = run_document("README.md", folder, env)
    assert len(ran) >= 5, ran
    if shutil.which("curl") is None:
        pytest.skip("the README ran; curl is not installed, so the emulator walkthrough did not")
    if not free_port(8088):
        pytest.skip(
            "the README ran; port 8088, the emulator's documented port, is taken on this "
            "machine, so the emulator walkthrough did not"
        )
    ran = run_document("docs/emulator.md", folder, env)
    assert len(ran) >= 3, ran


def test_output_matching_can_fail() -> None:
    """The matcher holds lines in order, numbers within 0.01, and nothing else."""
    out = " rank  score  path\n 1     0.537  /x/inbox/cat.jpg\n 2     0.327  /x/inbox/g.jpg\n"
    assert expected_matches(" 1  0.54  .../inbox/cat.jpg\n 2 0.33 ...g.jpg", out) is None
    assert expected_matches(" 1  0.60  .../inbox/cat.jpg", out) is not None
    assert expected_matches(" 2  0.327 ...\n 1  0.537 ...", out) is not None
    assert expected_matches("rank score path caption", out) is not None


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|<a href=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if m := HEADING.match(line):
            found.add(slug(m.group(1)))
        found.update(ANCHOR.findall(line))
    return found


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "examples/README.md"]


def test_every_relative_link_resolves() -> None:
    """Each relative link in README.md, docs/*.md and examples/README.md names a file that
    exists, and a ``#fragment`` names a heading (or an ``<a id>``) of that file."""
    broken: list[str] = []
    for md in markdown_files():
        text = re.sub(r"^```.*?^```", "", md.read_text(encoding="utf-8"), flags=re.S | re.M)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(REPO)} -> {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{where}: no such heading")
    assert not broken, "\n".join(broken)
