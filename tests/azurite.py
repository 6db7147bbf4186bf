"""Azurite, Microsoft's Azure Storage emulator, as a pytest fixture on loopback ports.

`make test` installs it into the project's `node_modules` when npm exists; without it the
tests that need it skip and say why. The account and key are Azurite's well-known
development account, published in Microsoft's "Use the Azurite emulator" docs; they are
not secrets anywhere but are treated as such by the code under test.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def azurite_command() -> str | None:
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    return shutil.which("azurite")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # polling interval of a condition wait, not synchronization


@dataclass
class Azurite:
    """A running Azurite: its endpoints and the credentials of the development account."""

    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    log: Path

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_azurite(workdir: Path) -> Azurite:
    """Start Azurite on free loopback ports, data under ``workdir``; wait until it listens."""
    command = azurite_command()
    if command is None:
        pytest.skip(
            "azurite not installed (run `make test`, which installs it when npm exists, or "
            "`npm install azurite`)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    blob_port, queue_port, table_port = _free_port(), _free_port(), _free_port()
    log = workdir / "azurite.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                command,
                "--silent",
                "--location",
                str(workdir),
                "--blobHost",
                "127.0.0.1",
                "--queueHost",
                "127.0.0.1",
                "--tableHost",
                "127.0.0.1",
                "--blobPort",
                str(blob_port),
                "--queuePort",
                str(queue_port),
                "--tablePort",
                str(table_port),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    handle = Azurite(process, blob_port, queue_port, log)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"azurite exited with {process.returncode}: "
                f"{log.read_text(errors='replace')[-500:]}"
            )
        return _listening(blob_port) and _listening(queue_port)

    try:
        wait_for(up, START_TIMEOUT, "azurite to listen")
    except BaseException:
        handle.stop()
        raise
    return handle


def unique_name(prefix: str) -> str:
    """A fresh container or queue name (lowercase, 3-63 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class FaultProxy:
    """A loopback reverse proxy in front of Azurite that answers chosen requests with a
    throttling error, as Azure Storage does under load (503 ``ServerBusy``), and forwards
    everything else unchanged. Shared Key signatures cover the path, not the host, so
    signed requests pass through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fail: Callable[[str, str], bool] = lambda method, path: False
        self.status, self.error_code = 503, "ServerBusy"
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.fail(self.command, self.path):
                    status, data = proxy.status, b""
                    headers = [("x-ms-error-code", proxy.error_code)]
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                    try:
                        conn.request(self.command, self.path, body, dict(self.headers))
                        resp = conn.getresponse()
                        status, data = resp.status, resp.read()
                        headers = [
                            (k, v)
                            for k, v in resp.getheaders()
                            if k.lower()
                            not in ("content-length", "connection", "transfer-encoding")
                        ]
                    finally:
                        conn.close()
                with proxy._lock:
                    proxy.log.append((self.command, self.path, status))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
