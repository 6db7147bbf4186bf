"""A blob container (or a prefix of it) as a source, like a folder: naming and assembly.

``az://account/container[/prefix]`` addresses and ``[[sources]] kind = "blob"`` entries
become :class:`~imgrag.connectors.blob.BlobSourceConfig`; this module registers them and
assembles a :class:`~imgrag.pipeline.source_blob.BlobSource` under the one indexer
(``imgrag ingest``) and the one daemon (``imgrag watch``), and counts a source for
``imgrag status`` without a daemon. Point ids are ``uuid5(source, blob name)``; hits carry
the blob's URL (never a SAS) as ``abs_path``.

The ``blob`` extra (azure-storage) is imported in one place, below: without it, folder
sources work and anything that needs a container raises ``ExtraNotInstalled`` (one line,
with the install command).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from imgrag._errors import ExtraNotInstalled, SourceError
from imgrag.connectors.index import FileState
from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.daemon import Daemon
from imgrag.pipeline.ingest import Indexer, Outcome, Summary
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.runtime import Runtime, open_runtime
from imgrag.pipeline.sources import BLOB_SCHEME, check_name
from imgrag.pipeline.status import SourceStatus
from pydantic import ValidationError

_MISSING: ExtraNotInstalled | None = None
try:  # the one import of the blob extra
    from imgrag._errors import BlobConfigError, BlobUriError
    from imgrag.connectors.blob import BlobSourceConfig, Listing, Reconciler, open_container
    from imgrag.pipeline.source_blob import BlobSource, blob_state
except ExtraNotInstalled as exc:
    _MISSING = exc

log = logging.getLogger("imgrag.blob")


# -- naming and configuration --------------------------------------------------------------


def _need_extra() -> None:
    """Raise the one-line ``ExtraNotInstalled`` when the blob extra is not installed."""
    if _MISSING is not None:
        raise _MISSING


def _parse(data: Mapping[str, Any]) -> BlobSourceConfig:
    """A :class:`BlobSourceConfig`; any error is one line naming the field, never a value."""
    _need_extra()
    try:
        return BlobSourceConfig.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(entry)"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise SourceError(f"blob source: {where}: {message}") from None
    except (BlobConfigError, BlobUriError) as exc:
        raise SourceError(str(exc)) from None


def blob_configs(settings: Settings) -> list[BlobSourceConfig]:
    """The ``[[sources]]`` entries with ``kind = "blob"``."""
    return [_parse(entry) for entry in settings.sources if entry.get("kind") == "blob"]


def _account(config: BlobSourceConfig) -> str:
    """The account name: given, or read from the connection string or the endpoint URL."""
    if config.account:
        return config.account
    if config.connection_string is not None:
        match = re.search(r"(?i)AccountName=([^;]+)", config.connection_string.get_secret_value())
        if match:
            return match.group(1)
    if config.account_url:
        parts = urlsplit(config.account_url)
        host = parts.hostname or ""
        if host.endswith(".core.windows.net"):
            return host.split(".")[0]
        first = parts.path.strip("/").split("/")[0]
        if first:
            return first  # emulator (path-style) URL: /<account>
    return "account"


def location_uri(config: BlobSourceConfig) -> str:
    """The ``az://account/container[/prefix]`` a source is registered under."""
    tail = f"/{config.prefix}" if config.prefix else ""
    return f"{BLOB_SCHEME}{_account(config)}/{config.container}{tail}"


def source_name(config: BlobSourceConfig) -> str:
    """The source's name: ``name`` from the config, else the container and a hash of where."""
    if config.name:
        return check_name(config.name)
    digest = hashlib.sha1(location_uri(config).encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{config.container[:40]}-{digest}"


def config_for_uri(settings: Settings, uri: str) -> BlobSourceConfig:
    """The configured ``[[sources]]`` entry for ``uri``, else one made from the address alone
    (signed in from the environment: connection string, SAS, key, or Entra ID)."""
    for config in blob_configs(settings):
        if location_uri(config) == uri.rstrip("/") or (config.uri or "").rstrip("/") == uri:
            return config
    return _parse({"uri": uri})


# -- assembling -------------------------------------------------------------------------------


def _container(config: BlobSourceConfig) -> Any:
    _need_extra()
    try:
        return open_container(config)
    except BlobConfigError as exc:
        raise SourceError(str(exc)) from None


def register(core: Core, config: BlobSourceConfig) -> str:
    """Record the source in the state directory's registry; its name."""
    name = source_name(config)
    core.registry.register_root(name, location_uri(config))
    return name


def blob_source(
    core: Core, config: BlobSourceConfig, environ: Mapping[str, str] | None = None
) -> BlobSource:
    """The source of ``config``, registered under its name."""
    return BlobSource(
        config,
        _container(config),
        name=register(core, config),
        rules=core.rules,
        uri=location_uri(config),
        environ=environ,
    )


def blob_ingestor(
    runtime: Runtime,
    config: BlobSourceConfig,
    *,
    on_progress: Callable[[str, Outcome], None] | None = None,
    observe_embed: Callable[[float], None] | None = None,
) -> Indexer:
    """The one indexer over the blob source of ``config``."""
    s = runtime.settings
    return Indexer(
        blob_source(runtime.core, config),
        embedder=runtime.embedder,
        index=runtime.index,
        journal=runtime.journal,
        thumbs=runtime.core.thumbs if s.ingest.thumbnails else None,
        image_format=s.embedder.image_format,
        embed_concurrency=runtime.embedder.info.recommended_concurrency,
        on_progress=on_progress,
        observe_embed=observe_embed,
    )


async def ingest_blob(
    core: Core,
    uri: str,
    *,
    prune: bool = False,
    on_progress: Callable[[str, Outcome], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
) -> Summary:
    """``imgrag ingest az://account/container[/prefix]``: one reconcile pass."""
    config = config_for_uri(core.settings, uri)
    async with open_runtime(core) as runtime:
        ingestor = blob_ingestor(runtime, config, on_progress=on_progress)
        if on_start is not None:
            on_start(ingestor.stop)
        try:
            return await ingestor.reconcile(on_total, prune=prune)
        finally:
            await ingestor.close()


def blob_source_status(
    core: Core, name: str, root: str, known: Mapping[str, FileState], journal: Journal
) -> SourceStatus:
    """The counts of a blob source without a daemon: pending comes from a listing now
    (a listing that fails makes the source unreachable and pending 0). Blocking."""
    scoped = journal if journal.source == name else journal.scoped(name)
    reachable, pending = False, 0
    try:
        config = config_for_uri(core.settings, root)
        rules = core.rules
        stored = {n: blob_state(known[n]) for n in known}
        rec = Reconciler(stored, is_image=lambda n: n.startswith(config.prefix) and rules.wants(n))
        listing = Listing(_container(config), config.prefix, secrets=config.secret_values())
        permanent = scoped.permanent_failures()
        todo = [
            d.entry.name
            for e in listing
            if (d := rec.feed(e)) is not None and d.kind != "unchanged"
        ]
        reachable = listing.complete
        if reachable:
            todo += rec.finish(True).sidecar_changed
            pending = sum(1 for n in todo if n not in permanent)
    except Exception as exc:  # status reports; it never fails over a source
        log.info("blob source %s not listed: %s", name, type(exc).__name__)
    return SourceStatus(
        name=name,
        root=root,
        reachable=reachable,
        indexed=len(known),
        pending=pending,
        failed=scoped.count(),
        failed_by_reason=scoped.by_reason(),
    )


def make_blob_daemon(
    runtime: Runtime,
    config: BlobSourceConfig,
    *,
    observe_embed: Callable[[float], None] | None = None,
    on_summary: Callable[[str, Summary], None] | None = None,
    renew_credential: Callable[[], Awaitable[None]] | None = None,
) -> Daemon:
    """The one daemon over the blob source of ``config``: it lists at the source's interval
    and consumes its queue, if it has one."""
    indexer = blob_ingestor(runtime, config, observe_embed=observe_embed)
    return Daemon(indexer, on_summary=on_summary, renew_credential=renew_credential)
