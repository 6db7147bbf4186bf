"""docker-compose.yml and the Dockerfile agree with the CLI and the settings model.

No Docker engine runs here, so these check the files, not running containers: the
Dockerfile's COPY lines are replayed into a folder and its install step builds the wheel
from exactly that, as ``pip install .`` in the image would.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml
from imgrag import ConfigError, Settings, load_settings
from imgrag.pipeline.cli import app

from tests.wheels import WheelBuildFailed, build_wheel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def parse_cli(args: list[str]) -> Any:
    """Parse a command line exactly as ``imgrag`` would; raises on unknown options."""
    group: Any = typer.main.get_command(app)
    command = group.commands[args[0]]
    return command.make_context(args[0], list(args[1:]))


def test_services_images_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"qdrant", "imgrag", "emulator"}
    image = services["qdrant"]["image"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", image), "pin the Qdrant version"
    assert "healthcheck" in services["qdrant"]
    named = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, volume
    assert services["imgrag"]["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert services["emulator"]["profiles"] == ["offline"]


def test_commands_match_the_cli(compose: dict[str, Any]) -> None:
    services = compose["services"]
    watch = parse_cli(services["imgrag"]["command"])
    assert watch.params["directories"] == [Path("/inbox")]
    emulator = parse_cli(services["emulator"]["command"])
    assert emulator.params["backend"] == "local"
    port = emulator.params["port"]
    endpoint = services["imgrag"]["environment"]["AZURE_INFERENCE_ENDPOINT"]
    assert f"http://emulator:{port}/models" in endpoint


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    known = {"AZURE_INFERENCE_ENDPOINT", "AZURE_INFERENCE_CREDENTIAL", "QDRANT_API_KEY",
             "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
             "IMGRAG_CONFIG", "IMGRAG_STATE_DIR", "IMGRAG_EMULATOR_API_KEY"}  # fmt: skip
    sections = Settings.model_fields
    for service in compose["services"].values():
        for name in service.get("environment", {}):
            if name in known or name.startswith("QDRANT__"):
                continue
            match = re.fullmatch(r"IMGRAG_([A-Z]+)__([A-Z_]+)", name)
            assert match, f"{name} is not an imgrag setting"
            section, key = match.group(1).lower(), match.group(2).lower()
            model = sections[section].annotation
            assert key in model.model_fields, f"{name}: no key {key!r} in [{section}]"  # type: ignore[union-attr]  # every section is a model
    config = compose["services"]["imgrag"]["environment"]["IMGRAG_CONFIG"]
    assert (REPO / config.removeprefix("/app/")).is_file()


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


# -- the Dockerfile, replayed without Docker -----------------------------------------------


@dataclass
class Image:
    """What replaying a Dockerfile's instructions gives: the image's files (those the COPY
    lines put there) under ``root``, the wheel its install step builds, and its settings."""

    root: Path
    wheel: Path | None = None
    user: str = "root"
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def path(self, where: str) -> Path:
        """The file at ``where`` (absolute, or relative to the current WORKDIR) in the image."""
        absolute = PurePosixPath(self.workdir, where)
        return self.root.joinpath(*absolute.parts[1:])


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        name, _, args = (pending + stripped).partition(" ")
        out.append((name.upper(), args.strip()))
        pending = ""
    return out


def words(args: str) -> list[str]:
    """The JSON (exec) form or the shell form of an instruction's arguments."""
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def ignored(repo: Path) -> Callable[[str, list[str]], set[str]]:
    """A copytree ignore function for the repository's .dockerignore (what the build context
    leaves out): a pattern matches from the context's root, ``**/`` at any depth."""
    file = repo / ".dockerignore"
    lines = file.read_text().splitlines() if file.is_file() else []
    patterns = [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).resolve().relative_to(repo.resolve()).as_posix()
        out = set()
        for name in names:
            path = name if rel == "." else f"{rel}/{name}"
            for pattern in patterns:
                if fnmatch.fnmatch(path, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(name, pattern[3:])
                ):
                    out.add(name)
        return out

    return ignore


def copy_into(image: Image, repo: Path, args: list[str]) -> None:
    """One COPY from the build context (the repository), with Docker's rules: a folder's
    contents go into the destination; files go into it when it ends with / or several
    sources are named, else become it."""
    flags = [a for a in args if a.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        image.problems.append(f"COPY {' '.join(args)}: --from is not replayed here")
        return
    *sources, dest = [a for a in args if not a.startswith("--")]
    target = image.path(dest)
    into = dest.endswith("/") or len(sources) > 1
    for source in sources:
        origin = repo / source
        if not origin.exists():
            image.problems.append(f"COPY {source}: not in the build context")
        elif origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=ignored(repo))
        else:
            place = target / origin.name if into or target.is_dir() else target
            place.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, place)


def why(failed: WheelBuildFailed) -> str:
    """The build backend's own error line in pip's output, rather than pip's summary."""
    lines = [line.strip() for line in str(failed).splitlines()]
    errors = [x for x in lines if x.startswith("error:") and "subprocess-exited" not in x]
    return errors[0] if errors else lines[-1]


def replay(dockerfile: str, repo: Path, work: Path) -> Image:
    """Run the Dockerfile as far as it runs without Docker: COPY into ``work``, the
    ``pip install .`` step as a wheel build from the copied files, the rest recorded."""
    image = Image(root=work / "image")
    image.root.mkdir(parents=True)
    for name, args in instructions(dockerfile):
        if name == "WORKDIR":
            image.workdir = str(PurePosixPath(image.workdir, args))
            image.path(".").mkdir(parents=True, exist_ok=True)
        elif name == "COPY":
            copy_into(image, repo, words(args))
        elif name == "RUN":
            image.runs.append(args)
            # The default build (no EXTRAS) takes the branch that installs the project.
            if re.search(r"pip install \.(\s|;|$)", args):
                try:
                    image.wheel = build_wheel(image.path("."), work / "wheels")
                except WheelBuildFailed as exc:
                    image.problems.append(f"pip install . fails on the copied files: {why(exc)}")
        elif name == "USER":
            image.user = args.split(":")[0]
        elif name == "ENV":
            parts = words(args)
            if len(parts) == 2 and "=" not in parts[0]:
                parts = [f"{parts[0]}={parts[1]}"]  # the legacy ENV KEY value form
            for part in parts:
                key, _, value = part.partition("=")
                image.env[key] = value
        elif name == "VOLUME":
            image.volumes += words(args)
        elif name == "ENTRYPOINT":
            image.entrypoint = words(args)
        elif name == "CMD":
            image.cmd = words(args)
    return image


def gallery_assets(repo: Path) -> list[str]:
    folder = repo / "pipeline" / "gallery"
    return sorted(p.name for p in folder.iterdir() if p.suffix in {".html", ".js", ".css"})


def image_problems(dockerfile: str, repo: Path, work: Path) -> list[str]:
    """What the image built from ``dockerfile`` would lack to run ``imgrag watch /inbox``."""
    image = replay(dockerfile, repo, work)
    problems = image.problems
    if image.wheel is None:
        return problems or ["no RUN step installs the project (pip install .)"]
    with zipfile.ZipFile(image.wheel) as zf:
        names = set(zf.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    # The program the container starts, and the command it is given.
    program, *args = [*image.entrypoint, *image.cmd]
    if not re.search(rf"^{re.escape(program)} = imgrag\.pipeline\.cli:run$", scripts, re.M):
        problems.append(f"the wheel has no console script {program!r}")
    group: Any = typer.main.get_command(app)
    if not args or args[0] not in group.commands:
        problems.append(f"{args[:1]} is not an imgrag command ({sorted(group.commands)})")
    else:
        parse_cli(args)
    # What the installed package reads at run time.
    wanted = ["imgrag/__init__.py", "imgrag/py.typed", "imgrag/pipeline/cli.py"]
    wanted += [f"imgrag/pipeline/gallery/{name}" for name in gallery_assets(repo)]
    for package in ("pipeline", "connectors"):
        for module in sorted((repo / package).rglob("*.py")):
            rel = module.relative_to(repo).as_posix()
            if not rel.startswith("pipeline/_package/"):
                wanted.append(f"imgrag/{rel}")
    problems += [f"the wheel lacks {name}" for name in wanted if name not in names]
    # Installed, imgrag reads no packaged profile (no file means the settings' defaults, see
    # config.load_settings); the one docker-compose.yml names in IMGRAG_CONFIG must be there.
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    config = compose["services"]["imgrag"]["environment"]["IMGRAG_CONFIG"]
    try:
        load_settings(image.path(config), state_dir=work / "state")
    except ConfigError as exc:
        problems.append(f"IMGRAG_CONFIG={config}: {exc}")
    # Who runs, and where the state goes.
    if image.user in {"root", "0"}:
        problems.append(f"the daemon runs as {image.user}")
    else:
        made = [r for r in image.runs if re.search(rf"useradd\b.*\b{re.escape(image.user)}$", r)]
        if not made or any(re.search(r"--uid[ =]0\b|-u ?0\b", r) for r in made):
            problems.append(f"no RUN creates {image.user} as a user other than root")
    # IMGRAG_STATE_DIR is the state_dir setting (the settings model's IMGRAG_ prefix)
    assert Settings.model_config.get("env_prefix") == "IMGRAG_"
    assert "state_dir" in Settings.model_fields
    state = image.env.get("IMGRAG_STATE_DIR")
    if state is None or state not in image.volumes:
        problems.append(f"IMGRAG_STATE_DIR={state} is not a VOLUME ({image.volumes})")
    return problems


def test_the_dockerfile_builds_an_image_that_can_run_the_daemon(tmp_path: Path) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert image_problems(dockerfile, REPO, tmp_path) == []


BROKEN = {
    "no_pipeline": (("COPY pipeline ./pipeline\n", ""), "directory 'pipeline"),
    "no_configs": (("COPY configs ./configs\n", ""), "IMGRAG_CONFIG=/app/configs/"),
    "wrong_program": (('ENTRYPOINT ["imgrag"]', 'ENTRYPOINT ["imgragd"]'), "console script"),
    "as_root": (("USER imgrag\n", "USER root\n"), "runs as root"),
    "state_elsewhere": (('VOLUME ["/state"]', 'VOLUME ["/data"]'), "not a VOLUME"),
    "unknown_command": (('CMD ["watch", "/inbox"]', 'CMD ["follow", "/inbox"]'), "not an"),
    "uid_0": (("--uid 10001", "--uid 0"), "other than root"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_dockerfile_is_caught(tmp_path: Path, broken: str) -> None:
    """The check above can fail: each change to the real Dockerfile is named."""
    (old, new), expected = BROKEN[broken]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert old in dockerfile
    problems = image_problems(dockerfile.replace(old, new), REPO, tmp_path)
    assert any(expected in p for p in problems), problems
