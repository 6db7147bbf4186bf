"""Settings: TOML profiles, environment overrides, secrets and one-line errors."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from imgrag import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "IMGRAG_CONFIG",
        "IMGRAG_STATE_DIR",
        "AZURE_INFERENCE_CREDENTIAL",
        "AZURE_INFERENCE_ENDPOINT",
        "QDRANT_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_default_profile_is_offline() -> None:
    settings = load_settings(REPO / "configs" / "default.toml")
    assert settings.embedder.provider == "local"
    assert settings.store.kind == "edge"
    assert settings.embedder.api_key is None
    assert "*.heic" in settings.ingest.include


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[embedder]\nprovider = "foundry"\nmax_concurrency = 4\n')
    monkeypatch.setenv("IMGRAG_EMBEDDER__MAX_CONCURRENCY", "16")
    monkeypatch.setenv("IMGRAG_STORE__COLLECTION", "photos")
    monkeypatch.setenv("IMGRAG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMGRAG_CONFIG", str(path))
    settings = load_settings()
    assert settings.embedder.provider == "foundry"
    assert settings.embedder.max_concurrency == 16
    assert settings.store.collection == "photos"
    assert settings.state_dir == tmp_path / "state"
    assert settings.config_path == path


def test_secrets_come_from_the_environment_and_never_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_INFERENCE_CREDENTIAL", "azure-secret-123")
    monkeypatch.setenv("AZURE_INFERENCE_ENDPOINT", "https://r.services.ai.azure.com/models")
    monkeypatch.setenv("QDRANT_API_KEY", "qdrant-secret-456")
    settings = load_settings(write(tmp_path, '[embedder]\nprovider = "foundry"\n'))
    assert settings.embedder.api_key is not None
    assert settings.embedder.api_key.get_secret_value() == "azure-secret-123"
    assert settings.embedder.endpoint == "https://r.services.ai.azure.com/models"
    assert settings.store.api_key is not None
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "azure-secret-123" not in shown and "qdrant-secret-456" not in shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[embedder]\nmax_concurrency = "many"\n', "[embedder] max_concurrency: Input should"),
        ('[embedder]\nprovider = "openai"\n', "[embedder] provider: Input should be 'local'"),
        (
            '[store]\ncolection = "x"\n',
            "[store] colection: unknown setting; did you mean 'collection'?",
        ),
        ("[ingest]\nsettle_seconds = -1\n", "[ingest] settle_seconds: Input should be greater"),
        ("[embedder\nprovider = 1\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_profile_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key a shipped profile writes is what the loaded settings hold: a key renamed in
    the code, or a value the loader drops or converts, fails here."""
    for name in [n for n in os.environ if n.startswith("IMGRAG_")]:
        monkeypatch.delenv(name)
    written = tomllib.loads(path.read_text())
    settings = load_settings(path)
    assert settings.config_path == path
    assert written, f"{path.name} sets nothing"
    for section, values in written.items():
        for key, value in values.items():
            loaded = getattr(getattr(settings, section), key)
            assert loaded == value, (
                f"{path.name}: [{section}] {key} = {value!r} loads as {loaded!r}"
            )
