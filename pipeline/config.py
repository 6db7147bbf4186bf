"""Settings: a TOML profile overridden by ``IMGRAG_<SECTION>__<KEY>`` environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from imgrag._errors import ConfigError
from imgrag.connectors.config import EmbedderConfig, StoreConfig
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

APP_NAME = "imgrag"


def default_state_dir() -> Path:
    """The per-user state directory: the platform's user data directory (on Linux
    ``$XDG_DATA_HOME/imgrag``, else ``~/.local/share/imgrag``), whatever the current folder."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def user_config_file() -> Path:
    """The per-user config file (on Linux ``$XDG_CONFIG_HOME/imgrag/config.toml``)."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.toml"


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
    thumbnails: bool = True
    """Write each image's gallery thumbnail while it is decoded for embedding."""
    progress_seconds: float = Field(default=10.0, gt=0)
    """How often a long pass logs its progress when stderr is not a terminal."""


class ApiConfig(_Section):
    """``[api]``: the daemon's local HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token: SecretStr | None = Field(default=None, exclude=True)
    auth: Literal["token", "none"] = "token"
    """``token``: every route but ``/health`` needs the token (generated on the first start,
    see api_token.py); ``none``: open to every local user (a single-user machine)."""
    allowed_roots: list[Path] = Field(default_factory=list)
    """Folders ``POST /sources`` and ``/ingest`` may take although they lie in a system
    folder (``/etc``, ``/proc``, ...), which are refused otherwise."""
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
    state_dir: Path = Field(default_factory=default_state_dir)
    sources: list[dict[str, Any]] = Field(default_factory=list, exclude=True, repr=False)
    """``[[sources]]`` entries: ``kind = "blob"`` containers (``pipeline.blob_source`` reads
    them; they may hold secrets, so they are never dumped or shown)."""
    config_path: Path | None = Field(default=None, exclude=True)

    @field_validator("sources")
    @classmethod
    def _known_kinds(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in value:
            if entry.get("kind") != "blob":
                raise ValueError('each [[sources]] entry needs kind = "blob" (the one kind)')
        return value

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


# Variables named IMGRAG_... that are not settings: read elsewhere, never "unknown".
_OTHER_VARIABLES = {"IMGRAG_CONFIG", "IMGRAG_API_TOKEN", "IMGRAG_EMULATOR_API_KEY"}


def _env_name(loc: tuple[int | str, ...]) -> str:
    return "IMGRAG_" + "__".join(str(p) for p in loc).upper()


def _env_value(name: str) -> str | None:
    for key, value in os.environ.items():  # pydantic-settings matches names in any case
        if key.upper() == name:
            return value
    return None


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The setting names valid where ``loc`` points (its section's fields)."""
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        model = getattr(field, "annotation", None) if field is not None else None
        if model is None:
            return []
    return [n for n in getattr(model, "model_fields", {}) if n != "config_path"]


def _describe(exc: ValidationError, where: str) -> str:
    """One line: where the bad value came from (the file or the variable), the key, what is
    wrong, and for an unknown key the nearest valid one."""
    import difflib

    err = exc.errors()[0]
    loc = tuple(err["loc"])
    env = _env_name(loc)
    # The environment beats the file: a set variable is where the value came from.
    from_env = _env_value(env) is not None
    source = f"environment variable {env}" if from_env else where
    key = _location(loc)
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        valid = _fields_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        message = "unknown setting" + (f"; did you mean {close[0]!r}?" if close else "")
        if valid and not close:
            message += f" (valid: {', '.join(valid)})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


def unknown_environment() -> list[str]:
    """Warnings for ``IMGRAG_...`` variables that name no setting (they would be ignored)."""
    import difflib

    sections = [n for n in Settings.model_fields if n != "config_path"]
    out = []
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("IMGRAG_") or upper in _OTHER_VARIABLES:
            continue
        head = upper.removeprefix("IMGRAG_").split("__", 1)[0].lower()
        if head in sections:
            continue
        close = difflib.get_close_matches(head, sections, n=1, cutoff=0.6)
        hint = (
            f"did you mean IMGRAG_{close[0].upper()}...?"
            if close
            else (f"settings are IMGRAG_<{'|'.join(s.upper() for s in sections)}>...")
        )
        out.append(f"environment variable {name} is not a setting and is ignored; {hint}")
    return out


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: the argument, ``$IMGRAG_CONFIG``, or the user config file
    when it exists; None means the packaged defaults. Never relative to the current folder
    unless the caller named a relative path."""
    if path is not None:
        return Path(path)
    env = os.environ.get("IMGRAG_CONFIG")
    if env:
        return Path(env)
    user = user_config_file()
    return user if user.is_file() else None


def load_settings(
    path: str | os.PathLike[str] | None = None, *, state_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """Read a TOML profile and apply environment overrides and secrets. ``state_dir`` (the
    ``--state-dir`` option) beats ``IMGRAG_STATE_DIR`` and the profile.

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
        raise ConfigError(_describe(exc, where)) from None
    settings.config_path = cfg_path
    if state_dir is not None:
        settings.state_dir = Path(state_dir)
    # Absolute once: a daemon and a command run elsewhere must name the same directory.
    settings.state_dir = settings.state_dir.expanduser().absolute()
    if settings.state_dir.exists() and not settings.state_dir.is_dir():
        raise ConfigError(
            f"the state directory {settings.state_dir} is a file: name a folder with "
            "--state-dir or IMGRAG_STATE_DIR"
        )
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
