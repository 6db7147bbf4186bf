"""Azure SDK clients for a blob source: one credential, azure-core retries, explicit timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from azure.storage.blob import ContainerClient, ExponentialRetry
from azure.storage.queue import QueueClient
from imgrag._errors import BlobConfigError

from .config import BlobSourceConfig
from .secrets import protect_logs


def _retry(config: BlobSourceConfig) -> ExponentialRetry:
    # The storage retry policy (azure-core based) retries 408, every 5xx but 501/505
    # (Azure Storage throttles with 503 ServerBusy) and connection errors, with
    # exponential backoff and jitter.
    return ExponentialRetry(
        initial_backoff=config.retry_initial_backoff,
        increment_base=config.retry_increment_base,
        retry_total=config.retry_total,
        random_jitter_range=config.retry_jitter,
    )


# Downloads are fetched in ranges of this size, so a large image is never held whole in
# memory (the SDK's defaults are a 32 MiB first request and 4 MiB ranges).
DOWNLOAD_RANGE_BYTES = 4 * 1024 * 1024


def _common(config: BlobSourceConfig) -> dict[str, Any]:
    return {
        "retry_policy": _retry(config),
        "connection_timeout": config.connection_timeout,
        "read_timeout": config.read_timeout,
    }


def _credential(config: BlobSourceConfig, auth: str, environ: Mapping[str, str] | None) -> Any:
    if auth == "sas":
        return config.secret("sas", environ).get_secret_value()
    if auth == "key":
        if not config.account:
            raise BlobConfigError(
                f"blob source {config.display}: account-key auth needs the account name "
                "(`account` or an az:// uri)"
            )
        return {
            "account_name": config.account,
            "account_key": config.secret("key", environ).get_secret_value(),
        }
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _account_url(config: BlobSourceConfig, queue: bool) -> str:
    if queue:
        if config.queue_account_url:
            return config.queue_account_url
        if config.account:
            return config.location.default_queue_url
    else:
        if config.account_url:
            return config.account_url
        if config.account:
            return config.location.default_account_url
    raise BlobConfigError(
        f"blob source {config.display}: give `account_url`/`queue_account_url`, an az:// uri "
        "or a connection string"
    )


_Client = TypeVar("_Client", ContainerClient, QueueClient)


def _open(
    kind: type[_Client],
    name: str,
    config: BlobSourceConfig,
    environ: Mapping[str, str] | None,
    options: dict[str, Any],
) -> _Client:
    """A container or queue client on the source's auth; its secrets are hidden from logs."""
    auth = config.resolved_auth(environ)
    protect_logs(config.secret_values(environ))
    if auth == "connection_string":
        conn = config.secret("connection_string", environ).get_secret_value()
        return kind.from_connection_string(conn, name, **options)
    url = _account_url(config, queue=kind is QueueClient)
    return kind(url, name, credential=_credential(config, auth, environ), **options)


def open_container(
    config: BlobSourceConfig, environ: Mapping[str, str] | None = None, **kwargs: Any
) -> ContainerClient:
    """The container client for this source (extra ``kwargs`` go to the azure-core pipeline)."""
    options = {
        **_common(config),
        "max_single_get_size": DOWNLOAD_RANGE_BYTES,
        "max_chunk_get_size": DOWNLOAD_RANGE_BYTES,
        **kwargs,
    }
    return _open(ContainerClient, config.container, config, environ, options)


def open_queue(
    config: BlobSourceConfig, environ: Mapping[str, str] | None = None, **kwargs: Any
) -> QueueClient:
    """The queue client for ``config.queue``; message bodies come back as raw bytes."""
    if not config.queue:
        raise BlobConfigError(f"blob source {config.display} has no `queue` configured")
    # Event Grid writes base64 text today and wrote plain JSON before; we decode both
    # ourselves, so the SDK hands us the text as it is stored.
    options = {**_common(config), **kwargs}
    options.setdefault("message_decode_policy", None)
    return _open(QueueClient, config.queue, config, environ, options)
