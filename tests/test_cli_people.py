"""``imgrag search`` / ``imgrag similar`` and config errors as people meet them, in real
subprocesses over a real index (the offline model, scikit-image's photos). Every case here
once ended in a traceback or an unhelpful line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.test_cli_ingest import REPO, imgrag
from tests.test_gallery_api import skimage_photo


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("people")
    root = base / "inbox"
    root.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(skimage_photo(name), root / name)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("IMGRAG_", "AZURE_"))}
    env.update(
        IMGRAG_CONFIG=str(REPO / "configs" / "default.toml"),
        IMGRAG_STATE_DIR=str(base / "state"),
        IMGRAG_EMBEDDER__PROVIDER="local",
        IMGRAG_STORE__COLLECTION="people",
        IMGRAG_INGEST__SETTLE_SECONDS="0",
        COLUMNS="200",
    )
    done = imgrag("ingest", str(root), env=env)
    assert done.returncode == 0, done.stderr
    return root, env


def test_bad_filter_values_are_one_line(indexed: tuple[Path, dict[str, str]]) -> None:
    _, env = indexed
    one_line_error(imgrag("search", "a cat", "--filter", "min_size=abc", env=env), "min_size")
    one_line_error(imgrag("search", "a cat", "--filter", "taken_after=soon", env=env), "date")
    one_line_error(imgrag("search", "a cat", "--filter", "folder", env=env), "key=value")


def test_a_query_image_that_is_no_image_is_one_line(
    indexed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = indexed
    fake = tmp_path / "notimage.png"
    fake.write_text("hello")
    one_line_error(imgrag("search", "--image", str(fake), env=env), "not an image")
    one_line_error(imgrag("similar", str(fake), env=env), "not an image")


def test_a_stale_daemon_file_whose_pid_was_reused_is_ignored(
    indexed: tuple[Path, dict[str, str]],
) -> None:
    root, env = indexed
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon_file = Path(env["IMGRAG_STATE_DIR"]) / "daemon.json"
    info = {"pid": os.getpid(), "host": "127.0.0.1", "port": port, "root": str(root)}
    daemon_file.write_text(json.dumps({**info, "started_at": 1.0}))
    try:
        found = imgrag("search", "a photo of a cat", "-n", "1", env=env)
        assert found.returncode == 0 and "Traceback" not in found.stderr, found.stderr
        assert str(root / "chelsea.png") in found.stdout
        status = imgrag("status", env=env)
        assert status.returncode == 0 and "no daemon running" in status.stdout, status.stderr
    finally:
        daemon_file.unlink()


def test_a_port_in_use_is_one_line(indexed: tuple[Path, dict[str, str]]) -> None:
    root, env = indexed
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = imgrag("watch", str(root), env={**env, "IMGRAG_API__PORT": str(port)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(port) in errors[0] and "IMGRAG_API__PORT" in errors[0]
    assert len(proc.stderr.splitlines()) <= 3, proc.stderr


def test_results_show_clickable_absolute_paths_and_hide_empty_columns(
    indexed: tuple[Path, dict[str, str]],
) -> None:
    root, env = indexed
    plain = imgrag("search", "a photo of a cat", "-n", "2", env=env)
    assert plain.returncode == 0, plain.stderr
    assert str(root / "chelsea.png") in plain.stdout
    assert "caption" not in plain.stdout and "tags" not in plain.stdout  # none has any
    linked = imgrag("search", "a photo of a cat", "-n", "1", env={**env, "FORCE_COLOR": "1"})
    assert "\x1b]8;id=" in linked.stdout and (root / "chelsea.png").as_uri() in linked.stdout


def test_similar_by_file_or_by_indexed_path(indexed: tuple[Path, dict[str, str]]) -> None:
    root, env = indexed
    by_file = imgrag("similar", str(root / "chelsea.png"), "--json", env=env)
    assert by_file.returncode == 0, by_file.stderr
    paths = [h["path"] for h in json.loads(by_file.stdout)]
    assert paths and "chelsea.png" not in paths and set(paths) <= {"coffee.png", "rocket.jpg"}
    by_path = imgrag("similar", "rocket.jpg", "--json", env=env)
    assert by_path.returncode == 0, by_path.stderr
    assert "rocket.jpg" not in [h["path"] for h in json.loads(by_path.stdout)]
    one_line_error(imgrag("similar", "nope.png", env=env), "not in the index")


def test_no_matches_and_nothing_relevant_say_why(
    indexed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = indexed
    filtered = imgrag("search", "a cat", "--filter", "folder=nowhere", env=env)
    assert filtered.returncode == 0 and "no matches" in filtered.stdout
    assert "--filter" in filtered.stdout
    high = imgrag("search", "a cat", "--min-score", "0.99", env=env)
    assert "no matches" in high.stdout and "--min-score" in high.stdout
    empty = imgrag("search", "a cat", env={**env, "IMGRAG_STATE_DIR": str(tmp_path / "fresh")})
    assert "no matches" in empty.stdout and "imgrag ingest" in empty.stdout, empty.stderr
    junk = imgrag("search", "tax return 2023", env=env)
    assert junk.returncode == 0 and "nothing relevant found" in junk.stdout
    assert "weak" in junk.stdout


def test_open_hands_the_top_hit_to_the_desktop_opener(
    indexed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = indexed
    bin_dir, record = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\necho "$1" > {record}\n')
    opener.chmod(opener.stat().st_mode | stat.S_IEXEC)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    proc = imgrag("search", "a photo of a cat", "-n", "1", "--open", env=env)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().strip() == str(root / "chelsea.png")


def test_config_errors_name_the_true_source_and_the_nearest_key(
    indexed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = indexed
    bad = tmp_path / "bad.toml"
    bad.write_text('[embedder]\nmodle = "x"\n')
    one_line_error(
        imgrag("--config", str(bad), "status", env=env), str(bad), "did you mean 'model'"
    )
    # --config after the command is the same option
    one_line_error(imgrag("status", "--config", str(bad), env=env), str(bad), "did you mean")
    one_line_error(imgrag("status", f"--config={bad}", env=env), str(bad))
    one_line_error(
        imgrag("status", env={**env, "IMGRAG_EMBEDDER__DIMENSIONS": "abc"}),
        "environment variable IMGRAG_EMBEDDER__DIMENSIONS",
    )
    typo = imgrag("status", env={**env, "IMGRAG_EMBEDER__MODEL": "x"})
    assert typo.returncode == 0, typo.stderr
    assert "IMGRAG_EMBEDER__MODEL" in typo.stderr and "IMGRAG_EMBEDDER" in typo.stderr
