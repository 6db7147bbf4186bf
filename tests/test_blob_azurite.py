"""The blob connector against Azurite, Microsoft's Azure Storage emulator, over loopback.

Azure contract notes cited where they matter:
- List Blobs is paged by `maxresults`/`NextMarker`; `include=metadata,tags` adds metadata
  and index tags (Blob service REST API, "List Blobs").
- `If-Match: <etag>` on Get Blob answers 412 Precondition Failed once the blob changed
  (REST API "Specifying conditional headers for Blob service operations").
- Event Grid writes each event to a Storage Queue as base64 JSON
  (learn.microsoft.com/azure/event-grid/event-schema-blob-storage; MicrosoftDocs/azure-docs#102923).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    generate_container_sas,
)
from azure.storage.queue import QueueClient
from imgrag._errors import BlobKeptChanging, BlobSourceError, BlobTooLarge, SidecarInvalid
from imgrag.connectors.blob import (
    BlobEvent,
    BlobSourceConfig,
    BlobState,
    Listing,
    PoisonMessage,
    QueueWorker,
    SidecarData,
    download_to,
    open_container,
    open_queue,
    read_sidecars,
    reconcile,
)

from tests.azurite import (
    ACCOUNT,
    ACCOUNT_KEY,
    Azurite,
    FaultProxy,
    start_azurite,
    unique_name,
    wait_for,
)

NO_ENV: dict[str, str] = {}
ARM = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    handle = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield handle
    handle.stop()


def config(server: Azurite, container: str, **fields: Any) -> BlobSourceConfig:
    base: dict[str, Any] = {
        "account": ACCOUNT,
        "account_url": server.blob_url,
        "queue_account_url": server.queue_url,
        "container": container,
        "auth": "connection_string",
        "connection_string": server.connection_string,
        # Fast retries: the tests never wait on a real backoff.
        "retry_total": 1,
        "retry_initial_backoff": 0,
        "retry_increment_base": 0,
        "retry_jitter": 0,
        "connection_timeout": 5,
        "read_timeout": 10,
    }
    return BlobSourceConfig.model_validate({**base, **fields})


@pytest.fixture
def container(server: Azurite) -> Iterator[ContainerClient]:
    svc = BlobServiceClient.from_connection_string(server.connection_string)
    client = svc.create_container(unique_name("imgs"))
    yield client
    client.delete_container()


def put(c: ContainerClient, name: str, data: bytes, **kw: Any) -> str:
    return str(c.get_blob_client(name).upload_blob(data, overwrite=True, **kw)["etag"]).strip('"')


def listed(c: ContainerClient, prefix: str = "", page_size: int = 1000) -> Listing:
    listing = Listing(c, prefix, page_size=page_size)
    list(listing)  # drain
    return listing


def snapshot(server: Azurite, c: ContainerClient, prefix: str = "") -> dict[str, BlobState]:
    client = open_container(config(server, c.container_name), NO_ENV)
    return {
        e.name: BlobState(e.etag, e.size, e.last_modified, e.content_md5)
        for e in Listing(client, prefix, page_size=7)
    }


# --- listing and reconcile ---------------------------------------------------------------


def test_backfill_streams_pages_of_one_prefix(server: Azurite, container: ContainerClient) -> None:
    for i in range(11):
        put(container, f"2025/june/{i:02}.jpg", b"x" * (i + 1), metadata={"n": str(i)})
    put(container, "2025/july/a.jpg", b"a")
    put(container, "2026/june/b.jpg", b"b")
    client = open_container(config(server, container.container_name), NO_ENV)
    listing = Listing(client, "2025/june/", page_size=4)
    seen = []
    for entry in listing:
        # Streamed: the listing is not complete while its rows are still coming.
        assert listing.complete is False
        seen.append(entry)
    assert listing.complete is True and listing.error is None
    assert listing.pages == 3  # 4 + 4 + 3 rows, one page in memory at a time
    assert [e.name for e in seen] == [f"2025/june/{i:02}.jpg" for i in range(11)]
    first = seen[0]
    assert first.size == 1 and first.etag and first.metadata == {"n": "0"}
    assert first.content_md5 is not None  # single-shot uploads keep a Content-MD5


def test_change_delete_and_copy_show_in_the_next_listing(
    server: Azurite, container: ContainerClient
) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        put(container, name, name.encode() * 50)
    stored = snapshot(server, container)
    put(container, "b.jpg", b"new content")
    container.delete_blob("c.jpg")
    source = container.get_blob_client("a.jpg").url
    copy = container.get_blob_client("copy-of-a.jpg")
    copy.start_copy_from_url(source)
    wait_for(
        lambda: copy.get_blob_properties().copy.status == "success", 20, "the server-side copy"
    )
    client = open_container(config(server, container.container_name), NO_ENV)
    rec = reconcile(stored, Listing(client, page_size=2))
    decisions = {d.entry.name: d for d in rec.to_index}
    assert rec.complete and rec.unchanged == 1
    assert decisions["b.jpg"].kind == "changed" and decisions["b.jpg"].reuse_from is None
    assert decisions["copy-of-a.jpg"].kind == "new"
    assert decisions["copy-of-a.jpg"].reuse_from == "a.jpg"  # same Content-MD5: reuse the vector
    assert rec.gone == ["c.jpg"]


class FailAfterFirstListPage(RequestsTransport):
    """The real HTTP transport, except that every List Blobs call after the first fails
    as a dropped connection would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.list_calls = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        if "comp=list" in request.url:
            self.list_calls += 1
            if self.list_calls > 1:
                raise ServiceRequestError("connection reset by peer (injected)")
        return super().send(request, **kwargs)


def test_a_listing_that_fails_midway_removes_nothing(
    server: Azurite, container: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        put(container, f"{i}.jpg", b"z")
    stored = snapshot(server, container)
    stored["deleted-long-ago.jpg"] = BlobState("0x1", 1)
    transport = FailAfterFirstListPage()
    client = open_container(config(server, container.container_name), NO_ENV, transport=transport)
    listing = Listing(client, page_size=3)
    rec = reconcile(stored, listing)
    assert transport.list_calls >= 2  # the retry policy tried again before giving up
    assert listing.complete is False and listing.count == 3
    assert listing.error and "cannot reach" in listing.error
    assert rec.gone == [] and rec.complete is False
    assert "nothing is treated as deleted" in caplog.text
    # Control: the same state with a listing that completes does find the stale entry.
    ok = reconcile(
        stored, Listing(open_container(config(server, container.container_name), NO_ENV))
    )
    assert ok.gone == ["deleted-long-ago.jpg"]


# --- downloads ---------------------------------------------------------------------------


def small_chunks(server: Azurite, name: str, **kw: Any) -> ContainerClient:
    # 1 KiB ranges, so a download takes several GETs and can see a change between them.
    return open_container(
        config(server, name), NO_ENV, max_single_get_size=1024, max_chunk_get_size=1024, **kw
    )


def test_a_blob_changed_during_download_is_read_again(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    old, new = bytes(range(256)) * 32, b"second version " * 300  # 8 KiB, then 4.5 KiB
    put(container, "p.jpg", old)
    (entry,) = list(Listing(container))
    client = small_chunks(server, container.container_name)
    rewrites: list[str] = []

    def rewrite_once(current: int, total: int | None) -> None:
        if not rewrites:  # after the first 1 KiB range arrived
            rewrites.append(put(container, "p.jpg", new))

    got = download_to(
        client, entry, tmp_path / "p.jpg", max_bytes=1 << 20, progress_hook=rewrite_once
    )
    assert rewrites, "the hook never ran: the download was not chunked"
    assert (tmp_path / "p.jpg").read_bytes() == new
    assert got.attempts == 2 and got.etag == rewrites[0] and got.size == len(new)
    assert not (tmp_path / "p.jpg.part").exists()


def test_a_blob_changed_since_listing_is_read_at_its_new_etag(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    put(container, "q.jpg", b"one")
    (entry,) = list(Listing(container))
    etag2 = put(container, "q.jpg", b"two!")
    client = open_container(config(server, container.container_name), NO_ENV)
    got = download_to(client, entry, tmp_path / "q.jpg", max_bytes=100)
    assert got.etag == etag2 and (tmp_path / "q.jpg").read_bytes() == b"two!"
    assert got.attempts == 2


def test_size_is_checked_before_reading(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    put(container, "big.jpg", b"b" * 5000)
    (entry,) = list(Listing(container))
    requests: list[str] = []
    client = open_container(
        config(server, container.container_name),
        NO_ENV,
        raw_request_hook=lambda pipeline_request: requests.append(
            pipeline_request.http_request.method
        ),
    )
    with pytest.raises(BlobTooLarge, match="max_blob_bytes"):
        download_to(client, entry, tmp_path / "big.jpg", max_bytes=4096)
    assert requests == []  # not one byte was asked for
    assert not (tmp_path / "big.jpg").exists()


def test_sidecars_metadata_and_tags(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    put(container, "trip/photo.jpg", b"jpegbytes", metadata={"camera": "x100"})
    container.get_blob_client("trip/photo.jpg").set_blob_tags({"project": "alps"})
    put(container, "trip/photo.txt", b"  Sunrise over the ridge \n")
    put(container, "trip/photo.json", json.dumps({"tags": ["alps", "dawn"], "rating": 4}).encode())
    put(container, "trip/bad.jpg", b"j")
    put(container, "trip/bad.json", b"[1, 2")
    client = open_container(config(server, container.container_name), NO_ENV)
    listing = Listing(client, "trip/")
    entries = {e.name: e for e in listing}
    photo = entries["trip/photo.jpg"]
    assert photo.metadata == {"camera": "x100"}
    assert listing.include_tags and photo.tags == {"project": "alps"}
    got = download_to(client, photo, tmp_path / "photo.jpg", max_bytes=1000)
    assert got.metadata == {"camera": "x100"}
    side = read_sidecars(client, "trip/photo.jpg", present=entries.keys())
    assert side.caption == "Sunrise over the ridge"
    assert side.metadata == {
        "tags": ["alps", "dawn"],
        "rating": 4,
        "caption": "Sunrise over the ridge",
    }
    assert set(side.etags) == {"trip/photo.txt", "trip/photo.json"}
    assert side.etags["trip/photo.txt"] == entries["trip/photo.txt"].etag
    with pytest.raises(SidecarInvalid, match=r"trip/bad\.json is not valid JSON"):
        read_sidecars(client, "trip/bad.jpg", present=entries.keys())
    # Without the listing's names, absent sidecars are probed and simply absent.
    assert read_sidecars(client, "trip/none.jpg", present=None) == SidecarData()


# --- queue events ------------------------------------------------------------------------


def grid_message(kind: str, container: str, name: str, etag: str | None = None) -> str:
    """A Storage Queue message as Event Grid writes it: base64 of one event in the Event
    Grid schema (see the module docstring)."""
    event = {
        "topic": f"{ARM}/storageAccounts/{ACCOUNT}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": f"Microsoft.Storage.Blob{kind}",
        "eventTime": datetime.now(UTC).isoformat(),
        "id": unique_name("ev"),
        "data": {
            "api": "PutBlob",
            "url": f"http://127.0.0.1/{ACCOUNT}/{container}/{name}",
            "eTag": etag,
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }
    return base64.b64encode(json.dumps(event).encode()).decode()


@pytest.fixture
def queue_name(server: Azurite) -> Iterator[str]:
    name = unique_name("events")
    q = QueueClient.from_connection_string(server.connection_string, name)
    q.create_queue()
    yield name
    q.delete_queue()


def test_two_workers_on_one_queue_handle_every_blob_once(
    server: Azurite, container: ContainerClient, queue_name: str, tmp_path: Path
) -> None:
    cfg = config(server, container.container_name, queue=queue_name, visibility_timeout_seconds=60)
    sender = open_queue(cfg, NO_ENV)
    names = [f"in/{i:03}.jpg" for i in range(40)]
    for name in names:
        etag = put(container, name, name.encode())
        sender.send_message(grid_message("Created", container.container_name, name, etag))
    sender.send_message(grid_message("Created", "another-container", "x.jpg"))  # not ours
    handled: Counter[str] = Counter()
    by_worker: Counter[int] = Counter()
    lock = threading.Lock()
    poisoned: list[PoisonMessage] = []

    def make_worker(n: int) -> QueueWorker:
        client = open_container(cfg, NO_ENV)

        def handle(event: BlobEvent) -> None:
            entry = next(e for e in Listing(client, event.name) if e.name == event.name)
            download_to(
                client, entry, tmp_path / f"w{n}-{event.name.replace('/', '_')}", max_bytes=100
            )
            with lock:  # the "point is written"
                handled[event.name] += 1
                by_worker[n] += 1

        return QueueWorker(
            open_queue(cfg, NO_ENV),
            container=cfg.container,
            handle=handle,
            poison=poisoned.append,
            max_dequeues=cfg.max_dequeues,
            visibility_timeout=cfg.visibility_timeout_seconds,
            batch_size=4,
        )

    workers = [make_worker(0), make_worker(1)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop, 0.05)) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(handled.values()) >= len(names), 60, "both workers to drain the queue")
        wait_for(lambda: sum(w.stats.ignored for w in workers) == 1, 30, "the foreign event")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert handled == Counter(dict.fromkeys(names, 1))  # every blob exactly once
    assert all(by_worker[n] > 0 for n in (0, 1)), f"one worker did everything: {by_worker}"
    assert poisoned == []
    assert sender.get_queue_properties().approximate_message_count == 0


def test_poison_messages_go_to_the_journal_and_leave_the_queue(
    server: Azurite, container: ContainerClient, queue_name: str
) -> None:
    cfg = config(server, container.container_name, queue=queue_name)
    q = open_queue(cfg, NO_ENV)
    q.send_message(grid_message("Created", container.container_name, "good.jpg"))
    q.send_message(grid_message("Created", container.container_name, "bad.jpg"))
    q.send_message("this is not an event")
    handled: list[str] = []
    journal: list[PoisonMessage] = []

    def handle(event: BlobEvent) -> None:
        if event.name == "bad.jpg":
            raise ValueError("cannot decode image")
        handled.append(event.name)

    worker = QueueWorker(
        q,
        container=cfg.container,
        handle=handle,
        poison=journal.append,
        max_dequeues=2,
        visibility_timeout=1,
    )
    wait_for(lambda: worker.run_once() >= 0 and len(journal) == 2, 30, "two poison messages")
    assert handled == ["good.jpg"]
    reasons = sorted(p.reason for p in journal)
    assert reasons[0].startswith(
        "failed on each of 2 dequeues; last: ValueError: cannot decode image"
    )
    assert "neither JSON nor base64" in reasons[1]
    assert [p.dequeue_count for p in journal if "ValueError" in p.reason] == [2]
    wait_for(lambda: q.get_queue_properties().approximate_message_count == 0, 10, "an empty queue")


def test_a_poison_message_the_journal_refuses_stays_queued(
    server: Azurite, container: ContainerClient, queue_name: str
) -> None:
    cfg = config(server, container.container_name, queue=queue_name)
    q = open_queue(cfg, NO_ENV)
    q.send_message("garbage")

    def journal_down(p: PoisonMessage) -> None:
        raise OSError("disk full")

    worker = QueueWorker(
        q, container=cfg.container, handle=lambda e: None, poison=journal_down, visibility_timeout=1
    )
    assert worker.run_once() == 1
    assert worker.stats.poisoned == 0
    assert q.get_queue_properties().approximate_message_count == 1


# --- auth and secrets --------------------------------------------------------------------


def sas_for(container: str, **perms: bool) -> str:
    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(**perms),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def test_sas_key_and_connection_string_auth(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    put(container, "s.jpg", b"sas!")
    name = container.container_name
    base = {"connection_string": None, "auth": "sas"}
    sas = sas_for(name, read=True, list=True)
    by_sas = open_container(config(server, name, **base, sas_token="?" + sas), NO_ENV)
    (entry,) = list(Listing(by_sas))
    got = download_to(by_sas, entry, tmp_path / "s.jpg", max_bytes=10)
    assert got.url == f"{server.blob_url}/{name}/s.jpg"  # no SAS in the URL a hit shows
    assert (tmp_path / "s.jpg").read_bytes() == b"sas!"
    # The SAS from the environment, picked by auth = "auto".
    env = {"AZURE_STORAGE_SAS_TOKEN": sas}
    auto = config(server, name, connection_string=None, auth="auto")
    assert auto.resolved_auth(env) == "sas"
    assert [e.name for e in Listing(open_container(auto, env))] == ["s.jpg"]
    # Account key.
    by_key = open_container(
        config(server, name, connection_string=None, auth="key", account_key=ACCOUNT_KEY), NO_ENV
    )
    assert [e.name for e in Listing(by_key)] == ["s.jpg"]
    # Connection string from AZURE_STORAGE_CONNECTION_STRING.
    env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
    by_conn = open_container(config(server, name, connection_string=None, auth="auto"), env)
    assert [e.name for e in Listing(by_conn)] == ["s.jpg"]
    # A SAS without the list permission: the listing fails, and says it did.
    read_only = open_container(
        config(server, name, **base, sas_token=sas_for(name, read=True)), NO_ENV
    )
    denied = Listing(read_only)
    assert list(denied) == [] and denied.complete is False
    assert denied.error is not None and "403" in denied.error


def test_no_secret_in_any_output(
    server: Azurite,
    container: ContainerClient,
    queue_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name = container.container_name
    sas = sas_for(name, read=True)  # no list permission: listings fail
    secrets = [ACCOUNT_KEY, sas, server.connection_string]
    signature = next(p for p in sas.split("&") if p.startswith("sig=")).removeprefix("sig=")
    outputs: list[str] = []
    put(container, "big.jpg", b"b" * 100)
    (entry,) = list(Listing(container))

    wrong_key = config(
        server, name, connection_string=None, auth="key", account_key=ACCOUNT_KEY[:-8] + "AAAAAAA="
    )
    by_sas = config(server, name, connection_string=None, auth="sas", sas_token=sas)
    by_conn = config(server, name, queue=queue_name)
    for cfg in (wrong_key, by_sas, by_conn):
        outputs += [repr(cfg), str(cfg), cfg.display, cfg.model_dump_json()]
        client = open_container(cfg, NO_ENV, logging_enable=True)  # the SDK's HTTP logging too
        listing = Listing(client, secrets=cfg.secret_values(NO_ENV))
        list(listing)
        outputs.append(str(listing.error))
        for limit in (10, 1000):
            try:
                outputs.append(
                    repr(
                        download_to(client, entry, tmp_path / "x", max_bytes=limit, secrets=secrets)
                    )
                )
            except BlobSourceError as exc:
                outputs += [str(exc), repr(exc)]
    q = open_queue(by_conn, NO_ENV)
    q.send_message(f"not an event, but it quotes {server.connection_string} and ?{sas}")
    q.send_message(grid_message("Created", name, "big.jpg"))
    journal: list[PoisonMessage] = []

    def leaky(event: BlobEvent) -> None:
        raise RuntimeError(f"failed using {server.connection_string} {sas}")

    worker = QueueWorker(
        q,
        container=name,
        handle=leaky,
        poison=journal.append,
        max_dequeues=1,
        visibility_timeout=1,
        secrets=secrets,
    )
    wait_for(lambda: worker.run_once() >= 0 and len(journal) == 2, 30, "both messages journaled")
    outputs += [repr(p) for p in journal]
    outputs.append(caplog.text)
    text = "\n".join(outputs)
    assert "403" in text and "HTTP" in text  # the failures did happen and were described
    for secret in (ACCOUNT_KEY, signature, sas, server.connection_string):
        assert secret not in text


# --- throttling and transient errors ------------------------------------------------------


@pytest.fixture
def proxy(server: Azurite) -> Iterator[FaultProxy]:
    p = FaultProxy(server.blob_port)
    yield p
    p.close()


def through(server: Azurite, proxy: FaultProxy, container: str, **fields: Any) -> BlobSourceConfig:
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={proxy.url()};"
    )
    return config(server, container, connection_string=conn, **fields)


def test_throttled_reads_are_retried_by_the_storage_policy(
    server: Azurite, container: ContainerClient, proxy: FaultProxy, tmp_path: Path
) -> None:
    """503 ServerBusy is what Azure Storage answers when throttling ("Azure Storage
    scalability targets"; the SDK's ExponentialRetry retries 500/503)."""
    put(container, "t.jpg", b"throttled" * 10)
    for i in range(5):
        put(container, f"l{i}.jpg", b"l")
    budget = {"GET": 2}

    def two_503s_per_kind(method: str, path: str) -> bool:
        if budget.get(method, 0) > 0:
            budget[method] -= 1
            return True
        return False

    proxy.fail = two_503s_per_kind
    client = open_container(through(server, proxy, container.container_name, retry_total=3), NO_ENV)
    listing = Listing(client, page_size=2)
    names = [e.name for e in listing]
    assert listing.complete and len(names) == 6
    assert [s for _, _, s in proxy.log[:3]] == [503, 503, 200]  # retried, then served
    budget["GET"] = 2
    entry = next(e for e in Listing(container) if e.name == "t.jpg")
    got = download_to(client, entry, tmp_path / "t.jpg", max_bytes=1000)
    assert got.attempts == 1 and (tmp_path / "t.jpg").read_bytes() == b"throttled" * 10


def test_an_account_without_index_tags_is_listed_without_them(
    server: Azurite, container: ContainerClient, proxy: FaultProxy
) -> None:
    """Accounts with a hierarchical namespace have no blob index tags and refuse
    `include=tags` (Blob index tags: "feature support"); the listing goes on without."""
    put(container, "n.jpg", b"n", metadata={"m": "1"})
    proxy.status, proxy.error_code = 400, "InvalidQueryParameterValue"
    proxy.fail = lambda method, path: "comp=list" in path and "tags" in path
    client = open_container(through(server, proxy, container.container_name), NO_ENV)
    listing = Listing(client)
    (entry,) = list(listing)
    assert listing.complete and listing.include_tags is False
    assert entry.tags is None and entry.metadata == {"m": "1"}
    assert [s for _, _, s in proxy.log] == [400, 200]


def test_throttling_past_the_retries_ends_the_listing_incomplete(
    server: Azurite, container: ContainerClient, proxy: FaultProxy, tmp_path: Path
) -> None:
    for i in range(6):
        put(container, f"{i}.jpg", b"x")
    lists = {"n": 0}

    def busy_after_first_page(method: str, path: str) -> bool:
        if "comp=list" in path:
            lists["n"] += 1
            return lists["n"] > 1
        return True  # and every read is throttled too

    proxy.fail = busy_after_first_page
    client = open_container(through(server, proxy, container.container_name, retry_total=2), NO_ENV)
    stored = {f"{i}.jpg": BlobState("e", 1) for i in range(6)}
    listing = Listing(client, page_size=2)
    rec = reconcile(stored, listing)
    assert listing.count == 2 and not listing.complete
    assert listing.error is not None and "503" in listing.error
    assert rec.gone == []
    entry = next(e for e in Listing(container) if e.name == "0.jpg")
    with pytest.raises(BlobSourceError, match=r"reading 0\.jpg: HTTP 503"):
        download_to(client, entry, tmp_path / "0.jpg", max_bytes=10)
    assert not (tmp_path / "0.jpg").exists()


def test_a_blob_that_keeps_changing_is_given_up_after_the_bounded_attempts(
    server: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    put(container, "busy.jpg", bytes(4096))
    (entry,) = list(Listing(container))
    client = small_chunks(server, container.container_name)
    writes = [0]

    def rewrite_every_time(current: int, total: int | None) -> None:
        if current <= 1024:  # once per attempt, after its first range
            writes[0] += 1
            put(container, "busy.jpg", bytes([writes[0]]) * 4096)

    with pytest.raises(BlobKeptChanging, match="changed during each of 3 reads"):
        download_to(
            client,
            entry,
            tmp_path / "b.jpg",
            max_bytes=1 << 20,
            max_attempts=3,
            progress_hook=rewrite_every_time,
        )
    assert writes[0] == 3
    assert not (tmp_path / "b.jpg").exists() and not (tmp_path / "b.jpg.part").exists()


# --- a worker killed mid-run --------------------------------------------------------------

WORKER_PROGRAM = r"""
import os, sys, threading, pathlib
from imgrag.connectors.blob import BlobSourceConfig, QueueWorker, open_queue

cfg = BlobSourceConfig.model_validate_json(sys.argv[1])
points, hang_on = pathlib.Path(sys.argv[2]), int(sys.argv[3])
seen = [0]

def handle(event):
    seen[0] += 1
    (points / f"{event.name}.taken-by-{os.getpid()}").touch()
    if seen[0] == hang_on:
        threading.Event().wait()  # stuck mid-work until killed
    # The "point": one file per blob, replaced atomically, so a retry rewrites, never adds.
    tmp = points / f"{event.name}.tmp"
    tmp.write_text(event.etag or "")
    os.replace(tmp, points / event.name)
    with open(points / "writes.log", "a") as log:
        log.write(event.name + "\n")

def poison(message):
    raise SystemExit(f"unexpected poison message: {message.reason}")

QueueWorker(
    open_queue(cfg), container=cfg.container, handle=handle, poison=poison,
    max_dequeues=cfg.max_dequeues, visibility_timeout=cfg.visibility_timeout_seconds,
    batch_size=1,
).run(threading.Event(), 0.05)
"""


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(
    server: Azurite, container: ContainerClient, queue_name: str, tmp_path: Path
) -> None:
    """kill -9 while a message is in flight: it was never deleted, so after its visibility
    timeout a restarted worker takes it; every blob ends with exactly one point."""
    cfg = config(
        server,
        container.container_name,
        queue=queue_name,
        visibility_timeout_seconds=2,
        connection_string=None,
        auth="auto",
    )
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
    q = open_queue(cfg, env)
    names = [f"k/{i:02}.jpg" for i in range(10)]
    for name in names:
        q.send_message(
            grid_message("Created", container.container_name, name, put(container, name, b"k"))
        )
    points = tmp_path / "points"
    (points / "k").mkdir(parents=True)

    def spawn(hang_on: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_PROGRAM,
                cfg.model_dump_json(),
                str(points),
                str(hang_on),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )

    first = spawn(hang_on=4)
    try:
        wait_for(
            lambda: len(list(points.glob(f"k/*.taken-by-{first.pid}"))) == 4, 60, "the 4th take"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    taken = ["k/" + p.name.split(".taken-by-")[0] for p in points.glob(f"k/*.taken-by-{first.pid}")]
    (stuck,) = [n for n in taken if not (points / n).exists()]  # taken, never written
    second = spawn(hang_on=0)
    try:
        wait_for(
            lambda: (
                all((points / n).exists() for n in names)
                and q.get_queue_properties().approximate_message_count == 0
            ),
            60,
            "the restarted worker to finish the queue",
        )
    finally:
        second.kill()
        second.wait(timeout=10)
    writes = Counter((points / "writes.log").read_text().split())
    assert writes == Counter(dict.fromkeys(names, 1))
    assert (points / f"{stuck}.taken-by-{second.pid}").exists()  # the orphan was taken over


@pytest.mark.parametrize("renew", [True, False])
def test_a_slow_message_stays_with_its_worker_while_renewed(
    server: Azurite, container: ContainerClient, queue_name: str, renew: bool
) -> None:
    """Update Message with a new visibility timeout hides the message longer and returns a
    new pop receipt (Queue service REST API, "Update Message"). Without renewal, the
    control case, a second worker does get the message once the timeout ran out."""
    cfg = config(server, container.container_name, queue=queue_name)
    open_queue(cfg, NO_ENV).send_message(grid_message("Created", cfg.container, "slow.jpg"))
    release = threading.Event()
    took: list[str] = []

    def slow(event: BlobEvent) -> None:
        took.append("a")
        release.wait(60)

    def fast(event: BlobEvent) -> None:
        took.append("b")

    def worker(handle: Any) -> QueueWorker:
        return QueueWorker(
            open_queue(cfg, NO_ENV),
            container=cfg.container,
            handle=handle,
            poison=lambda p: None,
            visibility_timeout=1,
            renew=renew,
        )

    a, b = worker(slow), worker(fast)
    thread = threading.Thread(target=a.run_once)
    thread.start()
    try:
        wait_for(lambda: took == ["a"], 20, "worker a to take the message")
        if renew:
            # Four renewals at half the timeout: two whole timeouts have passed meanwhile.
            wait_for(lambda: b.run_once() >= 0 and a.stats.renewed >= 4, 30, "four renewals")
            assert b.stats.received == 0
        else:
            wait_for(lambda: b.run_once() > 0, 30, "worker b to get the expired message")
    finally:
        release.set()
        thread.join(timeout=30)
    assert took == (["a"] if renew else ["a", "b"])
    q = open_queue(cfg, NO_ENV)
    wait_for(lambda: q.get_queue_properties().approximate_message_count == 0, 10, "an empty queue")
