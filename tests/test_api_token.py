"""Secure by default: the first daemon start generates the local API's token (0600, in the
state directory), every route but ``/health`` wants it, our own clients send it, and
``POST /sources`` refuses system folders. A real daemon (``imgrag watch``) over loopback."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.api import refused_root
from imgrag.pipeline.api_token import api_token, gallery_link, token_path
from imgrag.pipeline.config import ApiConfig, Settings
from imgrag.pipeline.daemon_client import DaemonInfo
from pydantic import SecretStr

from tests import images_factory as f
from tests.test_cli_ingest import cli_env, imgrag
from tests.test_daemon_api import spawn_watch, started, wait_for


def settings(state: Path, **api: object) -> Settings:
    return Settings(state_dir=state, api=ApiConfig(**api))  # type: ignore[arg-type]


def test_the_first_start_makes_a_private_token_that_clients_then_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert api_token(settings(state)) is None  # a client before any start: nothing to send
    made = api_token(settings(state), create=True)
    assert made is not None and len(made.get_secret_value()) >= 32
    path = token_path(settings(state))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = api_token(settings(state), create=True)
    read = api_token(settings(state))
    assert again is not None and read is not None
    assert again.get_secret_value() == read.get_secret_value() == made.get_secret_value()
    os.chmod(path, 0o644)  # copied in loosely: the next start tightens it
    api_token(settings(state), create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_environment_overrides_and_auth_none_opts_out(tmp_path: Path) -> None:
    state = tmp_path / "state"
    api_token(settings(state), create=True)
    given = api_token(settings(state, token=SecretStr("from-env")), create=True)
    assert given is not None and given.get_secret_value() == "from-env"
    assert api_token(settings(tmp_path / "other", auth="none"), create=True) is None
    assert not token_path(settings(tmp_path / "other")).exists()
    link = gallery_link("http://127.0.0.1:8765", SecretStr("t0k"))
    assert link == "http://127.0.0.1:8765/?token=t0k"
    assert gallery_link("http://127.0.0.1:8765", None) == "http://127.0.0.1:8765/"


@pytest.mark.parametrize("folder", ["/", "/etc", "/etc/ssl", "/proc/self", "/var/log", "/usr"])
def test_system_folders_are_refused_as_sources(folder: str, tmp_path: Path) -> None:
    why = refused_root(Path(folder), [], tmp_path / "state")
    assert why is not None and "allowed_roots" in why
    assert refused_root(Path(folder), [Path(folder)], tmp_path / "state") is None


def test_the_state_directory_and_ordinary_folders(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "thumbs").mkdir(parents=True)
    assert "own state" in (refused_root(state / "thumbs", [], state) or "")
    assert refused_root(tmp_path / "photos", [], state) is None


@pytest.fixture
def daemon(
    tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[tuple[DaemonInfo, dict[str, str], Path, Path]]:
    """A daemon started with the default settings: no token in its environment."""
    root = tmp_path / "inbox"
    f.save(f.photo(1), root / "p.png", "PNG")
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    del env["IMGRAG_API_TOKEN"]
    log = tmp_path / "daemon.log"
    proc = spawn_watch(root, env, log)
    try:
        info = started(proc, tmp_path / "state" / "daemon.json", log)
        yield info, env, root, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_a_daemon_started_without_a_token_wants_the_one_it_made(
    daemon: tuple[DaemonInfo, dict[str, str], Path, Path], tmp_path: Path
) -> None:
    info, env, root, log = daemon
    path = tmp_path / "state" / "api_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{info.url}/health", timeout=10).status_code == 200  # open
    for route in ("/status", "/metrics", "/", f"/image/{'0' * 32}", f"/thumb/{'0' * 32}"):
        r = httpx.get(f"{info.url}{route}", timeout=10)
        assert r.status_code == 401 and "token" in r.json()["error"], route
    for route in ("/search", "/sources", "/ingest", "/forget"):
        r = httpx.post(f"{info.url}{route}", json={"text": "x", "path": "/etc"}, timeout=10)
        assert r.status_code == 401, route
    # The one-time link sets the page's cookie; the daemon printed it at its start.
    wait_for(lambda: f"?token={token}" in log.read_text(), what="the gallery link")
    opened = httpx.get(f"{info.url}/?token={token}", timeout=10)
    assert opened.status_code == 303 and "imgrag_token" in opened.headers["set-cookie"]
    # Our own client sends the token read from the state directory.
    wait_for(lambda: '"indexed": 1' in imgrag("status", "--json", env=env).stdout, what="p.png")
    # With the token, a system folder is still refused as a source, and nothing is added.
    r = httpx.post(f"{info.url}/sources", json={"path": "/etc"}, headers=auth, timeout=10)
    assert r.status_code == 400 and "system folder" in r.json()["error"], r.text
    assert r.json()["kind"] == "SourceError"
    r = httpx.post(f"{info.url}/ingest", json={"path": "/"}, headers=auth, timeout=10)
    assert r.status_code == 400 and "system folder" in r.json()["error"], r.text
    sources = imgrag("sources", "--json", env=env)
    assert "/etc" not in sources.stdout and str(root) in sources.stdout
    # The CLI hands `watch /etc` to the daemon, which refuses it in one line.
    refused = imgrag("watch", "/etc", env=env)
    assert refused.returncode != 0 and "system folder" in refused.stderr
