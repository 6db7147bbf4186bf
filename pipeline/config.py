"""Settings: a TOML profile overridden by ``IMGRAG_<SECTION>__<KEY>`` environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from imgrag.connectors.config import EmbedderConfig, StoreConfig
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG = Path("configs/default.toml")


class ConfigError(Exception):
    """A configuration file or override is invalid. The message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DEFAULT_INCLUDE = [
    "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.bmp", "*.tif", "*.tiff", "*.heic", "*.heif",
]  # fmt: skip


class IngestConfig(_Section):
    """``[ingest]``: which files are candidates and how eagerly they are picked up."""

    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    settle_seconds: float = Field(default=1.0, ge=0)
    rescan_minutes: float = Field(default=10.0, ge=0)


class ApiConfig(_Section):
    """``[api]``: the daemon's local HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token: SecretStr | None = Field(default=None, exclude=True)
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names the API answers besides loopback ones (against DNS rebinding)."""


class Settings(BaseSettings):
    """Everything imgrag reads from its configuration."""

    model_config = SettingsConfigDict(
        env_prefix="IMGRAG_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    state_dir: Path = Path(".imgrag")
    config_path: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the TOML file, which arrives as init values.
        return (env_settings, init_settings)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] in {"embedder", "store", "ingest", "api"}:
        return f"[{parts[0]}] {'.'.join(parts[1:])}"
    return ".".join(parts) or "(top level)"


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: the argument, ``IMGRAG_CONFIG``, or ``configs/default.toml``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("IMGRAG_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read a TOML profile and apply environment overrides and secrets.

    Raises ConfigError with one line naming the file, the key and what is wrong.
    """
    cfg_path = resolve_config_path(path)
    data: dict[str, Any] = {}  # no file: every setting at its default
    where = "defaults"
    if cfg_path is not None:
        where = str(cfg_path)
        try:
            with cfg_path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{cfg_path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _location(tuple(err["loc"]))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {key}: {err['msg']}{more}") from None
    settings.config_path = cfg_path
    _apply_environment(settings)
    return settings


def _apply_environment(settings: Settings) -> None:
    """Secrets and endpoints that come from the standard Azure / Qdrant variables."""
    key = os.environ.get("AZURE_INFERENCE_CREDENTIAL")
    if key and settings.embedder.api_key is None:
        settings.embedder.api_key = SecretStr(key)
    endpoint = os.environ.get("AZURE_INFERENCE_ENDPOINT")
    if endpoint and not settings.embedder.endpoint:
        settings.embedder.endpoint = endpoint
    qkey = os.environ.get("QDRANT_API_KEY")
    if qkey and settings.store.api_key is None:
        settings.store.api_key = SecretStr(qkey)
    token = os.environ.get("IMGRAG_API_TOKEN")
    if token and settings.api.token is None:
        settings.api.token = SecretStr(token)
