"""docker-compose.yml and the Dockerfile agree with the CLI and the settings model.

No Docker engine runs here, so these check the files, not running containers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from imgrag.pipeline.cli import app
from imgrag.pipeline.config import Settings

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


def test_dockerfile_runs_as_non_root_and_ships_the_packages() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    for folder in ("pipeline", "connectors", "configs"):
        assert f"COPY {folder} " in text
    assert 'ENTRYPOINT ["imgrag"]' in text
