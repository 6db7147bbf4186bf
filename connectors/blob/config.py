"""The ``[[sources]]`` entry for a container: ``kind = "blob"``, where it is and how to sign in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from imgrag._errors import BlobConfigError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .uri import BlobLocation, parse_az_uri, without_query

# The names the Azure CLI reads too, so one exported variable serves both.
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT_KEY = "AZURE_STORAGE_KEY"
ENV_SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"

AuthKind = Literal["auto", "connection_string", "key", "sas", "entra"]


class BlobSourceConfig(BaseModel):
    """One blob container (optionally a prefix of it) as a source.

    Give either ``uri = "az://account/container/prefix"`` or ``container`` with
    ``account_url`` or a connection string. Secrets are held as ``SecretStr`` and may also
    come from ``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_KEY`` or
    ``AZURE_STORAGE_SAS_TOKEN``.
    """

    # Validation errors must not echo an input that may hold a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["blob"] = "blob"
    name: str | None = None
    uri: str | None = None
    account: str | None = None
    account_url: str | None = None
    """The blob endpoint, e.g. ``https://<account>.blob.core.windows.net``; no SAS in it."""
    queue_account_url: str | None = None
    """The queue endpoint; derived from the account name when left empty."""
    container: str = ""
    prefix: str = ""
    auth: AuthKind = "auto"
    connection_string: SecretStr | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    list_interval_seconds: float = Field(default=600.0, gt=0)
    queue: str | None = None
    """A Storage Queue fed by an Event Grid subscription (``BlobCreated``/``BlobDeleted``)."""
    max_dequeues: int = Field(default=5, ge=1)
    visibility_timeout_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    max_blob_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    page_size: int = Field(default=1000, ge=1, le=5000)
    max_download_attempts: int = Field(default=3, ge=1)
    retry_total: int = Field(default=5, ge=0)
    retry_initial_backoff: int = Field(default=2, ge=0)
    """Seconds; the n-th retry waits about ``initial + base**n`` ± ``retry_jitter``."""
    retry_increment_base: int = Field(default=2, ge=0)
    retry_jitter: int = Field(default=1, ge=0)
    connection_timeout: float = Field(default=20.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)

    @field_validator("account_url", "queue_account_url")
    @classmethod
    def _no_sas_in_url(cls, value: str | None) -> str | None:
        if value and "?" in value:
            raise ValueError(
                "the endpoint URL must not carry a query; put a SAS token in `sas_token` "
                f"or {ENV_SAS_TOKEN}"
            )
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _locate(self) -> BlobSourceConfig:
        if self.uri:
            loc = parse_az_uri(self.uri)
            self.account = self.account or loc.account
            self.container = self.container or loc.container
            self.prefix = self.prefix or loc.prefix
        if not self.container:
            raise ValueError('a blob source needs `container` or `uri = "az://account/container"`')
        if self.sas_token is not None:
            self.sas_token = SecretStr(self.sas_token.get_secret_value().lstrip("?"))
        return self

    @classmethod
    def from_uri(cls, uri: str, **fields: object) -> BlobSourceConfig:
        """A config for ``az://account/container[/prefix]`` plus any other fields."""
        return cls.model_validate({"uri": uri, **fields})

    @property
    def location(self) -> BlobLocation:
        return BlobLocation(self.account or "", self.container, self.prefix)

    @property
    def display(self) -> str:
        """How to name this source to a user: never a secret."""
        if self.account:
            return self.location.uri
        base = without_query(self.account_url) if self.account_url else "(connection string)"
        return f"{base}/{self.container}/{self.prefix}".rstrip("/")

    def resolved_auth(self, environ: Mapping[str, str] | None = None) -> AuthKind:
        """``auto`` picks what is there: a connection string, a SAS, a key, else Entra ID."""
        if self.auth != "auto":
            return self.auth
        env = os.environ if environ is None else environ
        if self.connection_string is not None or env.get(ENV_CONNECTION_STRING):
            return "connection_string"
        if self.sas_token is not None or env.get(ENV_SAS_TOKEN):
            return "sas"
        if self.account_key is not None or env.get(ENV_ACCOUNT_KEY):
            return "key"
        return "entra"

    def secret(self, which: str, environ: Mapping[str, str] | None = None) -> SecretStr:
        """The secret for ``connection_string``, ``key`` or ``sas``, from config or environment."""
        env = os.environ if environ is None else environ
        field, var = {
            "connection_string": (self.connection_string, ENV_CONNECTION_STRING),
            "key": (self.account_key, ENV_ACCOUNT_KEY),
            "sas": (self.sas_token, ENV_SAS_TOKEN),
        }[which]
        if field is not None:
            return field
        value = env.get(var)
        if not value:
            key = {"connection_string": "connection_string", "key": "account_key"}.get(
                which, "sas_token"
            )
            raise BlobConfigError(
                f"blob source {self.display}: auth = {which!r} needs {var} or `{key}` "
                "in the source's config"
            )
        return SecretStr(value.lstrip("?") if which == "sas" else value)

    def secret_values(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Every secret this source may use, for redaction; empty strings left out."""
        env = os.environ if environ is None else environ
        values = [
            s.get_secret_value()
            for s in (self.connection_string, self.account_key, self.sas_token)
            if s is not None
        ]
        values += [env.get(v, "") for v in (ENV_CONNECTION_STRING, ENV_ACCOUNT_KEY, ENV_SAS_TOKEN)]
        return [v for v in values if v]
