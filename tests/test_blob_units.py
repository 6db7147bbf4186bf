"""The blob connector's plain-data parts: az:// addresses, config, redaction, Event Grid
decoding and reconcile decisions. No emulator needed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from imgrag._errors import BlobConfigError, BlobUriError, EventDecodeError
from imgrag.connectors.blob import (
    BlobEntry,
    BlobSourceConfig,
    BlobState,
    Reconciler,
    blob_url,
    decode_message,
    parse_az_uri,
    reconcile,
    redact,
)
from pydantic import ValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "c2VjcmV0LWtleS1ub3QtcmVhbC0wMTIzNDU2Nzg5YWJjZGVmZ2hpamtsbW5vcA=="
SAS = (
    "sv=2025-01-05&ss=b&srt=co&sp=rl&se=2031-01-01T00:00:00Z"
    "&sig=AbCdEfGhIjKlMnOpQrStUvWxYz%2B0123456789%3D"
)
ACCOUNT_ID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/photos01"
)


# --- az:// addresses ---------------------------------------------------------------------


def test_az_uri_parses_account_container_and_prefix() -> None:
    loc = parse_az_uri("az://photos01/shots/2025/june/")
    assert (loc.account, loc.container, loc.prefix) == ("photos01", "shots", "2025/june/")
    assert loc.uri == "az://photos01/shots/2025/june/"
    assert parse_az_uri("az://photos01/shots").prefix == ""
    assert loc.default_account_url == "https://photos01.blob.core.windows.net"


@pytest.mark.parametrize(
    "bad",
    ["s3://bucket/x", "az://Photos/shots", "az://photos01", "az://photos01/A_b", "az://ph/shots"],
)
def test_az_uri_rejects_what_azure_would(bad: str) -> None:
    with pytest.raises(BlobUriError, match="az://<account>/<container>"):
        parse_az_uri(bad)


def test_az_uri_with_a_sas_is_refused_without_echoing_it() -> None:
    with pytest.raises(BlobUriError) as info:
        parse_az_uri(f"az://photos01/shots?{SAS}")
    assert "sig=" not in str(info.value) and "AbCdEf" not in str(info.value)


def test_blob_url_never_carries_a_query() -> None:
    url = blob_url(f"https://photos01.blob.core.windows.net/shots?{SAS}", "a b/c#1.jpg")
    assert url == "https://photos01.blob.core.windows.net/shots/a%20b/c%231.jpg"


# --- config ------------------------------------------------------------------------------


def test_config_from_uri_and_secrets_stay_hidden() -> None:
    cfg = BlobSourceConfig.from_uri(
        "az://photos01/shots/inbox/", auth="key", account_key=KEY, queue="shots-events"
    )
    assert (cfg.account, cfg.container, cfg.prefix) == ("photos01", "shots", "inbox/")
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), cfg.display):
        assert KEY not in text
    assert cfg.secret("key", {}).get_secret_value() == KEY


def test_config_auto_auth_picks_what_is_there() -> None:
    cfg = BlobSourceConfig.from_uri("az://photos01/shots")
    assert cfg.resolved_auth({}) == "entra"
    assert cfg.resolved_auth({"AZURE_STORAGE_CONNECTION_STRING": "x"}) == "connection_string"
    assert cfg.resolved_auth({"AZURE_STORAGE_SAS_TOKEN": "x"}) == "sas"
    assert cfg.resolved_auth({"AZURE_STORAGE_KEY": "x"}) == "key"


def test_config_missing_secret_names_the_variable() -> None:
    cfg = BlobSourceConfig.from_uri("az://photos01/shots", auth="sas")
    with pytest.raises(BlobConfigError, match="AZURE_STORAGE_SAS_TOKEN"):
        cfg.secret("sas", {})


def test_config_refuses_a_sas_inside_the_endpoint() -> None:
    with pytest.raises(ValidationError) as info:
        BlobSourceConfig(
            container="shots", account_url=f"https://photos01.blob.core.windows.net?{SAS}"
        )
    assert "AbCdEf" not in str(info.value) and "sig=" not in str(info.value)
    with pytest.raises(ValidationError):
        BlobSourceConfig()  # no container at all


# --- redaction ---------------------------------------------------------------------------


def test_redact_removes_keys_signatures_and_told_secrets() -> None:
    conn = f"DefaultEndpointsProtocol=https;AccountName=photos01;AccountKey={KEY};"
    text = f"failed with {conn} and url https://x/y?{SAS} and token sv=1&sig=zzzzzzzz"
    out = redact(text, [conn, SAS])
    assert KEY not in out and "AbCdEfGh" not in out and "zzzzzzzz" not in out
    # Even untold: an AccountKey= or sig= pattern never passes; the rest stays readable.
    untold = redact(f"{conn} https://x/y?{SAS}")
    assert KEY not in untold and "AbCdEfGh" not in untold
    assert "AccountName=photos01" in untold and "sp=rl" in untold


# --- Event Grid messages ------------------------------------------------------------------
# Shapes from Microsoft's "Azure Blob Storage as an Event Grid source" schema
# (learn.microsoft.com/azure/event-grid/event-schema-blob-storage): subject
# /blobServices/default/containers/<c>/blobs/<name>; data.url, eTag, contentLength,
# sequencer, api. Event Grid writes each event to a queue as base64-encoded JSON
# (MicrosoftDocs/azure-docs#102923); older subscriptions wrote plain JSON.


def grid_event(etype: str, container: str, name: str, **data: object) -> dict[str, object]:
    return {
        "topic": ACCOUNT_ID,
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": etype,
        "eventTime": "2026-03-01T10:00:00.1234567Z",
        "id": "e-1",
        "data": {
            "api": "PutBlob" if etype.endswith("Created") else "DeleteBlob",
            "url": f"https://photos01.blob.core.windows.net/{container}/{name}",
            "sequencer": "0000000000000000000000000000A1B2",
            "blobType": "BlockBlob",
            **data,
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def test_event_grid_message_base64_and_plain() -> None:
    ev = grid_event(
        "Microsoft.Storage.BlobCreated", "shots", "2025/a b.jpg", eTag="0x8D1", contentLength=2048
    )
    raw = json.dumps(ev)
    for content in (base64.b64encode(raw.encode()).decode(), raw):
        (got,) = decode_message(content)
        assert (got.kind, got.container, got.name) == ("created", "shots", "2025/a b.jpg")
        assert (got.etag, got.size, got.account) == ("0x8D1", 2048, "photos01")
        assert got.event_time is not None and got.event_time.year == 2026


def test_cloudevents_schema_and_deletes() -> None:
    ev = {
        "specversion": "1.0",
        "type": "Microsoft.Storage.BlobDeleted",
        "source": ACCOUNT_ID,
        "subject": "/blobServices/default/containers/shots/blobs/x.png",
        "id": "e-2",
        "time": "2026-03-01T10:00:00Z",
        "data": {"api": "DeleteBlob", "url": "https://photos01.blob.core.windows.net/shots/x.png"},
    }
    (got,) = decode_message(base64.b64encode(json.dumps(ev).encode()))
    assert (got.kind, got.name, got.account, got.etag) == ("deleted", "x.png", "photos01", None)


def test_other_event_types_are_not_blob_events_and_garbage_is_an_error() -> None:
    other = grid_event("Microsoft.Storage.BlobTierChanged", "shots", "x.png")
    assert decode_message(json.dumps(other)) == []
    with pytest.raises(EventDecodeError):
        decode_message("not an event at all!")
    with pytest.raises(EventDecodeError):
        decode_message(base64.b64encode(b"{broken").decode())


# --- reconcile ---------------------------------------------------------------------------


def entry(name: str, etag: str = "e1", size: int = 10, md5: str | None = None) -> BlobEntry:
    return BlobEntry(name=name, etag=etag, size=size, last_modified=T0, content_md5=md5)


class Listed(list[BlobEntry]):
    def __init__(self, items: list[BlobEntry], complete: bool) -> None:
        super().__init__(items)
        self.complete = complete


def test_reconcile_unchanged_new_changed_gone() -> None:
    stored = {
        "a.jpg": BlobState("e1", 10, T0, "aa"),
        "b.jpg": BlobState("e1", 10, T0, "bb"),
        "gone.jpg": BlobState("e1", 10, T0, "gg"),
    }
    listing = Listed(
        [entry("a.jpg"), entry("b.jpg", "e2", 11), entry("c.jpg"), entry("notes.md")], True
    )
    rec = reconcile(stored, listing)
    kinds = {d.entry.name: d.kind for d in rec.to_index}
    assert kinds == {"b.jpg": "changed", "c.jpg": "new"}
    assert rec.unchanged == 1
    assert rec.gone == ["gone.jpg"]


def test_reconcile_incomplete_listing_reports_nothing_gone() -> None:
    stored = {"a.jpg": BlobState("e1", 10), "b.jpg": BlobState("e1", 10)}
    rec = reconcile(stored, Listed([entry("a.jpg")], complete=False))
    assert rec.complete is False and rec.gone == []
    # A plain iterable says nothing about completeness: treated as incomplete.
    assert reconcile(stored, [entry("a.jpg")]).gone == []


def test_reconcile_copy_and_rewrite_point_at_reusable_content() -> None:
    stored = {"a.jpg": BlobState("e1", 10, T0, "aa")}
    listing = Listed([entry("a.jpg", "e9", md5="aa"), entry("copy.jpg", "e5", md5="aa")], True)
    by_name = {d.entry.name: d for d in reconcile(stored, listing).to_index}
    assert by_name["copy.jpg"].kind == "new" and by_name["copy.jpg"].reuse_from == "a.jpg"
    assert by_name["a.jpg"].kind == "changed" and by_name["a.jpg"].reuse_from == "a.jpg"


def test_reconcile_sidecar_changes_mark_their_image() -> None:
    stored = {
        "p/one.jpg": BlobState("e1", 10, sidecars={"p/one.txt": "s1"}),
        "p/two.jpg": BlobState("e1", 10),
        "p/three.jpg": BlobState("e1", 10, sidecars={"p/three.json": "j1"}),
    }
    rec = Reconciler(stored)
    for e in [
        entry("p/one.jpg"),
        entry("p/one.txt", "s2"),  # edited
        entry("p/two.jpg"),
        entry("p/two.json", "j9"),  # added
        entry("p/three.jpg"),  # its json was removed
    ]:
        rec.feed(e)
    assert sorted(rec.finish(True).sidecar_changed) == ["p/one.jpg", "p/three.jpg", "p/two.jpg"]
    assert rec.finish(False).sidecar_changed == []
