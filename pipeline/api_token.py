"""The local API's token, on by default as Jupyter's is: the first daemon or ``imgrag serve``
start generates one and keeps it in the state directory (``api_token``, mode 0600); the CLI,
``Retriever`` and the gallery link read it from there. ``IMGRAG_API_TOKEN`` or ``[api] token``
overrides it; ``[api] auth = "none"`` turns it off (a single-user machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import state_writable
from pydantic import SecretStr

TOKEN_FILE = "api_token"


def token_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / TOKEN_FILE


def api_token(settings: Settings, *, create: bool = False) -> SecretStr | None:
    """The token the local API wants (None: open, ``auth = "none"``). ``create`` (a server
    starting): make the token file when there is none yet. A client reads it, and without
    one sends nothing (no daemon has started here yet)."""
    api = settings.api
    if api.auth == "none":
        return None
    if api.token is not None:
        return api.token
    path = token_path(settings)
    with contextlib.suppress(FileNotFoundError):
        return _read(path, fix_mode=create)
    if not create:
        return None
    with state_writable(Path(settings.state_dir)):
        return _generate(path)


def _read(path: Path, *, fix_mode: bool) -> SecretStr | None:
    if fix_mode and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)  # copied in with a loose mode: only its owner may read it
    text = path.read_text().strip()
    return SecretStr(text) if text else None


def _generate(path: Path) -> SecretStr | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server started at the same moment: its token wins
        return _read(path, fix_mode=False)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return SecretStr(token)


def gallery_link(url: str, token: SecretStr | None) -> str:
    """The gallery's address; with a token, the one-time link that sets its cookie."""
    base = url.rstrip("/") + "/"
    return f"{base}?token={token.get_secret_value()}" if token is not None else base
