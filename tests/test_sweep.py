"""Bad input as a new user types it, found by trying: each ended in a usage box, a 500 or a
folder watched by mistake, and now ends in one line (or one JSON error) with the cause."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.daemon_client import read_daemon_file

from tests.test_cli_ingest import AUTH, REPO, imgrag
from tests.test_cli_people import one_line_error
from tests.test_daemon_api import daemon  # noqa: F401  (the fixture: a running daemon)


def usage_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "--help" in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("search", "--fitler", "a=b", "cats"), ("--fitler", "--filter")),  # and the near one
        (("serach", "cats"), ("No such command 'serach'",)),
        (("similar",), ("Missing argument",)),
        (("search", "cats", "-n", "0"), ("--limit",)),
        (("search", "cats", "--min-score", "high"), ("--min-score",)),
        (("watch", "--port", "1"), ("--port",)),
    ],
)
def test_a_mistyped_command_line_is_one_line(
    args: tuple[str, ...], words: tuple[str, ...], tmp_path: Path
) -> None:
    env = {**os.environ, "IMGRAG_STATE_DIR": str(tmp_path / "state")}
    usage_error(imgrag(*args, env=env), *words)


def test_plain_imgrag_prints_the_help(tmp_path: Path) -> None:
    run = imgrag(env={**os.environ, "IMGRAG_STATE_DIR": str(tmp_path / "state")})
    assert run.returncode == 0 and "Usage: imgrag" in run.stdout and not run.stderr


BAD_BODIES = [
    ("/sources", b"{", "application/json", "Expecting"),
    ("/sources", b'{"path": 5}', "application/json", '"path"'),
    ("/sources", b'{"path": "/", "name": 5}', "application/json", "name"),  # was a 500
    ("/sources", b'{"path": "relative/folder"}', "application/json", "absolute"),  # was watched
    ("/sources", b'{"path": "/no/such/folder"}', "application/json", "existing folder"),  # too
    ("/sources", b'{"path": "/tmp"}', "text/plain", "Content-Type"),  # a web page's form post
    ("/ingest", b'{"path": "/no/such/folder"}', "application/json", "existing folder"),
    ("/ingest", b'{"path": "/tmp", "name": ["x"]}', "application/json", "name"),
    ("/ingest", b"\xff\xfe", "application/json", "Expecting"),
]


def test_bad_bodies_to_the_daemons_post_routes_are_json_errors_and_change_nothing(
    daemon: tuple[Path, dict[str, str], subprocess.Popen[str]],  # noqa: F811
) -> None:
    _, env, _ = daemon
    state = Path(env["IMGRAG_STATE_DIR"])
    info = read_daemon_file(state / "daemon.json")
    assert info is not None
    before = json.loads((state / "sources.json").read_text())
    for route, body, ctype, words in BAD_BODIES:
        r = httpx.post(f"{info.url}{route}", content=body, headers={**AUTH, "content-type": ctype})
        assert r.status_code == 400, (route, body, r.text)
        assert r.headers["content-type"] == "application/json", (route, body)
        assert words in r.json()["error"], (route, body, r.text)
    assert json.loads((state / "sources.json").read_text()) == before  # nothing registered
    health = httpx.get(f"{info.url}/health").json()
    assert health["status"] == "ok" and len(health["sources"]) == 1, health


def test_a_bad_variable_is_blamed_even_where_the_file_sets_the_key(tmp_path: Path) -> None:
    """``[embedder] provider`` is in the profile; the variable that overrides it is the cause."""
    env = {
        **os.environ,
        "IMGRAG_CONFIG": str(REPO / "configs" / "default.toml"),
        "IMGRAG_STATE_DIR": str(tmp_path / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "nope",
    }
    one_line_error(imgrag("status", env=env), "environment variable IMGRAG_EMBEDDER__PROVIDER")


def test_serve_on_an_address_not_of_this_machine_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "IMGRAG_STATE_DIR": str(tmp_path / "state")}
    one_line_error(imgrag("serve", "--host", "no.such.host.invalid", env=env), "--host")


def test_a_daemon_file_whose_port_another_server_took_is_no_daemon(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """The pid is alive (this test's) and the port answers JSON, but it is the emulator's."""
    state = tmp_path / "state"
    state.mkdir()
    port = urlsplit(emulator.url).port
    info = {"pid": os.getpid(), "host": "127.0.0.1", "port": port, "root": "/x"}
    (state / "daemon.json").write_text(json.dumps({**info, "started_at": 1.0}))
    env = {**os.environ, "IMGRAG_STATE_DIR": str(state)}
    run = imgrag("status", env=env)
    assert run.returncode == 0 and "no daemon running" in run.stdout, run.stdout + run.stderr


def test_a_state_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "state"
    file.write_text("not a folder")
    one_line_error(imgrag("status", env={**os.environ, "IMGRAG_STATE_DIR": str(file)}), "is a file")
