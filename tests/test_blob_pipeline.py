"""A blob container as a source, end to end: Azurite for storage, the Foundry emulator for
embeddings, the embedded Qdrant engine for the index, and imgrag in child processes.

Azure contract notes:
- List Blobs pages with ``maxresults``/``NextMarker``; a listing that stops before the last
  page says nothing about the blobs it did not reach (Blob service REST API, "List Blobs").
- A SAS travels in the query string; the blob's URL is the same without it
  (learn.microsoft.com/azure/storage/common/storage-sas-overview), so hits show the URL
  with the query removed.
- Copy Blob gives the copy a new etag and name but the same bytes (REST API "Copy Blob"):
  the copy's vector must come from the index, not from the embedder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    generate_container_sas,
)
from azure.storage.queue import QueueClient
from imgrag.connectors.blob import BlobSourceConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.blob_source import blob_ingestor, make_blob_daemon
from imgrag.pipeline.daemon import Daemon
from imgrag.pipeline.daemon_client import read_daemon_file
from imgrag.pipeline.ingest import Indexer
from imgrag.pipeline.keys import point_id
from imgrag.pipeline.runtime import open_runtime
from imgrag.pipeline.source_blob import BlobFollower, BlobSource
from PIL import Image

from tests import images_factory as f
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, FaultProxy, start_azurite, unique_name
from tests.conftest import wait_until
from tests.ingest_harness import settings_for, until
from tests.test_cli_ingest import AUTH, cli_env, images_embedded, imgrag, spawn_imgrag


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    handle = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield handle
    handle.stop()


@pytest.fixture
def container(server: Azurite) -> Iterator[ContainerClient]:
    svc = BlobServiceClient.from_connection_string(server.connection_string)
    client = svc.create_container(unique_name("pics"))
    yield client
    client.delete_container()


def png(seed: int) -> bytes:
    out = io.BytesIO()
    f.photo(seed, (48, 32)).save(out, "PNG")
    return out.getvalue()


def put(c: ContainerClient, name: str, data: bytes, **kw: Any) -> None:
    c.get_blob_client(name).upload_blob(data, overwrite=True, **kw)


def sas_for(container: str) -> str:
    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def secrets_of(server: Azurite, *sas: str) -> list[str]:
    """Every secret a test hands imgrag, and the parts that are secret alone."""
    out = [ACCOUNT_KEY, server.connection_string]
    for token in sas:
        out.append(token)
        out += [p.split("=", 1)[1] for p in token.split("&") if p.startswith("sig=")]
    return out


def assert_no_secret(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"
    assert "AccountKey=" not in text and "sig=" not in text, f"a credential appears in {where}"


def run_ok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = imgrag(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_cli_ingest_az_then_search_status_copy_and_no_secret(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """`imgrag ingest az://...` indexes the image blobs under the prefix; search answers with
    the blob URL; sidecar blobs and metadata are payload; a copy reuses its vector; a bad
    blob is journaled; status counts the source; no secret reaches any output."""
    name = container.container_name
    for i in range(3):
        put(container, f"cats/c{i}.png", png(i), metadata={"camera_roll": f"r{i}"})
    put(container, "cats/c0.txt", b"a grey cat on a sofa")
    put(container, "cats/c1.json", json.dumps({"tags": ["indoor"], "album": "home"}).encode())
    put(container, "dogs/d0.png", png(9))  # outside the prefix
    put(container, "cats/broken.png", b"\x89PNG not really")
    env = cli_env(tmp_path, emulator, AZURE_STORAGE_CONNECTION_STRING=server.connection_string)
    uri = f"az://{ACCOUNT}/{name}/cats/"
    outputs: list[str] = []

    first = run_ok("ingest", uri, "--json", env=env)
    outputs += [first.stdout, first.stderr]
    summary = json.loads(first.stdout)
    assert (summary["indexed"], summary["failed"]) == (3, 1), summary

    found = run_ok("search", "a cat", "--limit", "10", "--json", env=env)
    outputs += [found.stdout, found.stderr]
    hits = {h["path"]: h for h in json.loads(found.stdout)}
    assert sorted(hits) == ["cats/c0.png", "cats/c1.png", "cats/c2.png"]
    for path, hit in hits.items():
        assert hit["abs_path"] == f"{server.blob_url}/{name}/{path}"
        assert hit["id"] == point_id(hit["source"], path)
    assert hits["cats/c0.png"]["payload"]["caption"] == "a grey cat on a sofa"
    assert hits["cats/c1.png"]["payload"]["tags"] == ["indoor"]
    assert hits["cats/c1.png"]["payload"]["meta"]["album"] == "home"
    assert hits["cats/c2.png"]["payload"]["meta"]["camera_roll"] == "r2"

    # Unchanged blobs cost nothing; a copy is indexed with the stored vector.
    copy = container.get_blob_client("cats/copy-of-c1.png")
    copy.start_copy_from_url(container.get_blob_client("cats/c1.png").url)
    wait_until(
        lambda: copy.get_blob_properties().copy.status == "success", timeout=30, what="the copy"
    )
    embedded = images_embedded(emulator)
    again = run_ok("ingest", uri, "--json", env=env)
    outputs += [again.stdout, again.stderr]
    summary = json.loads(again.stdout)
    assert (summary["indexed"], summary["reused"], summary["unchanged"]) == (0, 1, 3), summary
    # The copy's vector came from the index: only the start-up probe reached the emulator.
    assert images_embedded(emulator) == embedded + 1

    put(container, "cats/new.png", png(5))
    status = run_ok("status", "--json", env=env)
    outputs += [status.stdout, status.stderr]
    report = json.loads(status.stdout)
    (src,) = report["sources"]
    assert src["root"] == uri.rstrip("/") and src["reachable"] is True
    assert (src["indexed"], src["pending"], src["failed"]) == (4, 1, 1), src
    assert src["failed_by_reason"] == {"undecodable": 1}
    (failure,) = report["failures"]
    assert (failure["path"], failure["reason"]) == ("cats/broken.png", "undecodable")
    text = run_ok("status", env=env)
    outputs += [text.stdout, text.stderr]
    assert f"{src['name']}: 4 indexed, 1 pending, 1 failed; {uri.rstrip('/')}" in text.stdout
    listed = run_ok("sources", "--json", env=env)
    outputs += [listed.stdout, listed.stderr]
    assert [s["root"] for s in json.loads(listed.stdout)] == [uri.rstrip("/")]
    gone = run_ok("forget", src["name"], "--json", env=env)
    outputs += [gone.stdout, gone.stderr]
    assert json.loads(gone.stdout)["removed"] == 4

    for i, out in enumerate(outputs):
        assert_no_secret(out, secrets_of(server), f"output {i}")
    for file in (tmp_path / "state").rglob("*"):
        if file.is_file() and file.suffix in (".json", ".sqlite", ".db", ""):
            assert_no_secret(file.read_bytes().decode("latin-1"), secrets_of(server), str(file))


def _proxied(server: Azurite, proxy: FaultProxy, container: str) -> BlobSourceConfig:
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={proxy.url()};"
    )
    return BlobSourceConfig.model_validate(
        {
            "account": ACCOUNT,
            "container": container,
            "auth": "connection_string",
            "connection_string": conn,
            "page_size": 2,
            "retry_total": 1,
            "retry_initial_backoff": 0,
            "retry_increment_base": 0,
            "retry_jitter": 0,
        }
    )


async def test_a_listing_that_fails_midway_removes_nothing(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """Blobs deleted while the listing breaks off after its first page stay indexed; the
    next complete listing removes them. Azure Storage answers 503 ServerBusy when it
    throttles ("Scalability and performance targets for Blob storage")."""
    for i in range(6):
        put(container, f"p{i}.png", png(20 + i))
    proxy = FaultProxy(server.blob_port)
    try:
        config = _proxied(server, proxy, container.container_name)
        async with open_runtime(settings_for(tmp_path, emulator)) as runtime:
            ingestor: Indexer = blob_ingestor(runtime, config)
            source = ingestor.origin
            assert isinstance(source, BlobSource)
            try:
                first = await ingestor.reconcile()
                assert first.indexed == 6
                container.delete_blob("p4.png")
                container.delete_blob("p5.png")
                lists = {"n": 0}

                def busy_after_first_page(method: str, path: str) -> bool:
                    if "comp=list" in path:
                        lists["n"] += 1
                        return lists["n"] > 1
                    return False

                proxy.fail = busy_after_first_page
                broken = await ingestor.reconcile()
                assert broken.removed == 0 and source.listing_error is not None
                assert "503" in source.listing_error
                assert ACCOUNT_KEY not in source.listing_error
                states = {s.path for s in runtime.index.file_states()}
                assert states == {f"p{i}.png" for i in range(6)}

                proxy.fail = lambda method, path: False
                whole = await ingestor.reconcile()
                assert whole.removed == 2 and source.listing_error is None
                states = {s.path for s in runtime.index.file_states()}
                assert states == {f"p{i}.png" for i in range(4)}
                thumbs = list((tmp_path / "state" / "thumbs").rglob("*.webp"))
                # made at ingest from the bytes downloaded; the removed blobs' went with them
                assert len(thumbs) == 4
                with Image.open(thumbs[0]) as img:
                    assert max(img.size) <= 256
            finally:
                await ingestor.close()
    finally:
        proxy.close()


def _daemon_get(state: Path, route: str) -> httpx.Response:
    info = read_daemon_file(state / "daemon.json")
    assert info is not None and info.port
    return httpx.get(f"http://{info.host}:{info.port}{route}", headers=AUTH, timeout=10)


def _blob_source(state: Path) -> dict[str, Any] | None:
    try:
        report = _daemon_get(state, "/status").json()
    except (AssertionError, httpx.HTTPError):
        return None
    found = [s for s in report["sources"] if s["root"].startswith("az://")]
    return found[0] if found else None


def test_a_blob_source_in_the_config_is_watched_by_the_daemon(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """`[[sources]] kind = "blob"` with SAS auth: the daemon lists at the interval, indexes a
    new blob (thumbnail served at once), removes a deleted one after a complete listing,
    and no secret shows in its log, status or health."""
    name = container.container_name
    put(container, "a.png", png(1))
    sas = sas_for(name)
    config = tmp_path / "imgrag.toml"
    config.write_text(
        (Path(__file__).resolve().parents[1] / "configs" / "default.toml").read_text()
        + "\n[[sources]]\n"
        + 'kind = "blob"\n'
        + 'name = "pics"\n'
        + f'account = "{ACCOUNT}"\n'
        + f'account_url = "{server.blob_url}"\n'
        + f'container = "{name}"\n'
        + 'auth = "sas"\n'
        + f'sas_token = "{sas}"\n'
        + "list_interval_seconds = 0.5\n"
    )
    state = tmp_path / "state"
    env = cli_env(tmp_path, emulator, IMGRAG_CONFIG=str(config), IMGRAG_API__PORT="0")
    watch = spawn_imgrag("watch", env=env)
    try:

        def indexed(n: int) -> bool:
            if watch.poll() is not None:
                raise AssertionError(f"imgrag watch exited: {watch.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            src = _blob_source(state)
            return src is not None and src["indexed"] == n and src["pending"] == 0

        wait_until(lambda: indexed(1), timeout=120, what="a.png indexed")
        put(container, "b.png", png(2))
        wait_until(lambda: indexed(2), timeout=60, what="b.png indexed")
        b_id = point_id("pics", "b.png")
        thumb = _daemon_get(state, f"/thumb/{b_id}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        full = _daemon_get(state, f"/image/{b_id}")
        assert full.status_code == 404 and "blob" in full.json()["error"]
        container.delete_blob("a.png")
        wait_until(lambda: indexed(1), timeout=60, what="a.png removed")
        hits = httpx.post(
            f"http://127.0.0.1:{read_daemon_file(state / 'daemon.json').port}/search",  # type: ignore[union-attr]
            json={"text": "anything", "limit": 5},
            headers=AUTH,
            timeout=30,
        ).json()
        assert [h["abs_path"] for h in hits] == [f"{server.blob_url}/{name}/b.png"]
        served = [
            _daemon_get(state, "/status").text,
            _daemon_get(state, "/health").text,
            json.dumps(hits),
        ]
    finally:
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=60)
    for i, text in enumerate([*served, out, err]):
        assert_no_secret(text, secrets_of(server, sas), f"daemon output {i}")
    assert "as source pics" in err


def grid_message(kind: str, container: str, name: str) -> str:
    """A Storage Queue message as Event Grid writes it: base64 of one Event Grid schema event
    (learn.microsoft.com/azure/event-grid/event-schema-blob-storage; the base64 encoding:
    MicrosoftDocs/azure-docs#102923)."""
    event = {
        "topic": f"/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/"
        f"storageAccounts/{ACCOUNT}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": f"Microsoft.Storage.Blob{kind}",
        "eventTime": datetime.now(UTC).isoformat(),
        "id": unique_name("ev"),
        "data": {"api": "PutBlob", "url": f"http://127.0.0.1/{ACCOUNT}/{container}/{name}"},
        "dataVersion": "",
        "metadataVersion": "1",
    }
    return base64.b64encode(json.dumps(event).encode()).decode()


async def test_queue_events_index_and_remove_blobs_between_listings(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """With a queue configured, Event Grid BlobCreated/BlobDeleted events change the index
    in seconds although the next listing is ten minutes away; a message that is not an
    event is journaled as a poison message and leaves the queue. The queue consumer is
    supervised: while its queue is missing it is down and health says so; once the queue
    exists it is restarted and health is ok again."""
    name = container.container_name
    queue_name = unique_name("events")
    queue = QueueClient.from_connection_string(server.connection_string, queue_name)
    config = BlobSourceConfig.model_validate(
        {
            "name": "evented",
            "account": ACCOUNT,
            "container": name,
            "auth": "connection_string",
            "connection_string": server.connection_string,
            "queue": queue_name,
            "list_interval_seconds": 600,
            "visibility_timeout_seconds": 30,
        }
    )
    try:
        async with open_runtime(settings_for(tmp_path, emulator)) as runtime:
            daemon: Daemon = make_blob_daemon(runtime, config)
            task = asyncio.create_task(daemon.run())
            try:
                await until(daemon.ready.is_set, 60, "the first listing")
                await until(lambda: "task:queue" in daemon.problems, 60, "the queue task down")
                assert daemon.health == "degraded"
                assert "queue task down" in daemon.health_report()["problems"][0]
                queue.create_queue()
                await until(
                    lambda: daemon.health == "ok" and daemon.restarts.get("queue", 0) >= 1,
                    60,
                    "the queue task restarted",
                )
                put(container, "e.png", png(31))
                queue.send_message(grid_message("Created", name, "e.png"))
                await until(lambda: "e.png" in daemon.indexer.known, 60, "e.png from its event")
                container.delete_blob("e.png")
                queue.send_message(grid_message("Deleted", name, "e.png"))
                await until(lambda: "e.png" not in daemon.indexer.known, 60, "e.png removed")
                queue.send_message("this is not an Event Grid event")
                await until(
                    lambda: daemon.journal.by_reason().get("poison_message") == 1,
                    60,
                    "the poison message journaled",
                )
                await until(
                    lambda: queue.get_queue_properties().approximate_message_count == 0,
                    30,
                    "the queue empty",
                )
                assert daemon.health == "ok", daemon.problems
                assert set(daemon.restarts) == {"queue"}
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 60)
                await daemon.indexer.close()
    finally:
        with contextlib.suppress(ResourceNotFoundError):
            queue.delete_queue()


def test_watch_takes_an_az_address_and_status_narrows_to_it(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """`imgrag watch az://account/container/prefix` (signed in from
    AZURE_STORAGE_CONNECTION_STRING) indexes the prefix; `imgrag status az://...` answers
    for that source through the running daemon."""
    name = container.container_name
    put(container, "keep/k.png", png(41))
    put(container, "skip/s.png", png(42))
    uri = f"az://{ACCOUNT}/{name}/keep"
    state = tmp_path / "state"
    env = cli_env(
        tmp_path,
        emulator,
        AZURE_STORAGE_CONNECTION_STRING=server.connection_string,
        IMGRAG_API__PORT="0",
    )
    watch = spawn_imgrag("watch", uri, env=env)
    try:
        wait_until(
            lambda: (src := _blob_source(state)) is not None and src["indexed"] == 1,
            timeout=120,
            what="keep/k.png indexed",
        )
        status = run_ok("status", uri, "--json", env=env)
        (src,) = json.loads(status.stdout)["sources"]
        assert (src["root"], src["indexed"], src["failed"]) == (uri, 1, 0)
    finally:
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=60)
    assert f"watching {uri} as source" in err
    for i, text in enumerate([out, err, status.stdout, status.stderr]):
        assert_no_secret(text, secrets_of(server), f"watch output {i}")


def test_sources_entries_are_checked_and_never_shown(tmp_path: Path) -> None:
    """A `[[sources]]` entry must say `kind = "blob"`; a bad entry is one line naming the
    field without its value; the entries (which may hold a key) are not in the settings'
    repr or dump."""
    from imgrag import ConfigError, SourceError, load_settings
    from imgrag.pipeline.blob_source import blob_configs

    conn = f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:1/x;"
    bad_kind = tmp_path / "kind.toml"
    bad_kind.write_text('[[sources]]\nkind = "folder"\nroot = "/photos"\n')
    with pytest.raises(ConfigError, match=r'kind = "blob"'):
        load_settings(bad_kind)
    good = tmp_path / "good.toml"
    good.write_text(
        f'[[sources]]\nkind = "blob"\ncontainer = "pics"\nconnection_string = "{conn}"\n'
    )
    settings = load_settings(good)
    assert ACCOUNT_KEY not in repr(settings) and ACCOUNT_KEY not in settings.model_dump_json()
    (config,) = blob_configs(settings)
    assert config.container == "pics" and ACCOUNT_KEY not in repr(config)
    typo = tmp_path / "typo.toml"
    typo.write_text(
        f'[[sources]]\nkind = "blob"\ncontainer = "pics"\nconection_string = "{conn}"\n'
    )
    with pytest.raises(SourceError, match="conection_string") as caught:
        blob_configs(load_settings(typo))
    assert ACCOUNT_KEY not in str(caught.value)


async def test_two_daemons_on_one_queue_index_each_blob_once(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """Two workers on one queue and one index (competing consumers, Azure Queue Storage's
    visibility timeout: "Azure Queue Storage" docs, Receive/Get Messages): every
    BlobCreated event is handled by one of them, each image is embedded once, and the
    index holds one point per blob."""
    name = container.container_name
    queue_name = unique_name("shared")
    queue = QueueClient.from_connection_string(server.connection_string, queue_name)
    queue.create_queue()
    config = BlobSourceConfig.model_validate(
        {
            "name": "shared",
            "account": ACCOUNT,
            "container": name,
            "auth": "connection_string",
            "connection_string": server.connection_string,
            "queue": queue_name,
            "list_interval_seconds": 600,
            "visibility_timeout_seconds": 60,
        }
    )
    n = 12
    try:
        async with open_runtime(settings_for(tmp_path, emulator)) as runtime:
            daemons = [make_blob_daemon(runtime, config) for _ in range(2)]
            tasks = [asyncio.create_task(d.run()) for d in daemons]
            try:
                for d in daemons:
                    await until(d.ready.is_set, 60, "the first listing")
                before = images_embedded(emulator)
                for i in range(n):
                    put(container, f"s{i:02d}.png", png(60 + i))
                    queue.send_message(grid_message("Created", name, f"s{i:02d}.png"))

                def handled() -> int:
                    followers = [d.follower for d in daemons]
                    return sum(
                        f.stats.handled
                        for f in followers
                        if isinstance(f, BlobFollower) and f.stats
                    )

                await until(lambda: handled() == n, 120, "every event handled")
                states = list(runtime.index.file_states())
                assert sorted(s.path for s in states) == [f"s{i:02d}.png" for i in range(n)]
                assert images_embedded(emulator) - before == n
                # Deleted once handled: nothing is left to come back to the other worker.
                assert queue.get_queue_properties().approximate_message_count == 0
                assert handled() == n
            finally:
                for d in daemons:
                    d.stop()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                for d in daemons:
                    await d.indexer.close()
    finally:
        queue.delete_queue()


def test_kill_9_mid_blob_backfill_then_restart_leaves_one_point_per_blob(
    tmp_path: Path, emulator: EmulatorHandle, server: Azurite, container: ContainerClient
) -> None:
    """kill -9 of `imgrag ingest az://...` mid-backfill, then a rerun: every blob ends with
    exactly one point, what was stored before the kill is not embedded again, and a third
    pass costs nothing."""
    name = container.container_name
    n = 40
    for i in range(n):
        put(container, f"k/{i:02}.png", png(100 + i))
    uri = f"az://{ACCOUNT}/{name}/k"
    env = cli_env(tmp_path, emulator, AZURE_STORAGE_CONNECTION_STRING=server.connection_string)
    emulator.state.options.latency_ms = 40
    proc = spawn_imgrag("ingest", uri, env=env)
    try:
        emulator.state.wait_for(lambda s: images_embedded(emulator) >= 25, timeout=120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert images_embedded(emulator) < n  # killed mid-backfill

    kept = json.loads(run_ok("status", uri, "--json", env=env).stdout)["indexed"]
    emulator.state.options.latency_ms = 0
    rerun = json.loads(run_ok("ingest", uri, "--json", env=env).stdout)
    assert (rerun["failed"], rerun["unchanged"]) == (0, kept)
    assert rerun["indexed"] == rerun["requests"] == n - kept  # the stored ones are not paid again

    hits = json.loads(run_ok("search", "a photo", "--limit", "100", "--json", env=env).stdout)
    urls = [h["abs_path"] for h in hits]
    assert len(urls) == len(set(urls)) == n  # one point per blob, none twice
    (src,) = json.loads(run_ok("status", uri, "--json", env=env).stdout)["sources"]
    assert (src["indexed"], src["pending"], src["failed"]) == (n, 0, 0)
    again = json.loads(run_ok("ingest", uri, "--json", env=env).stdout)
    assert (again["indexed"], again["unchanged"], again["requests"]) == (0, n, 0)
