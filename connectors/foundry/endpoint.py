"""Azure endpoint kinds: how the URL is completed, which header carries the key, which Entra
scope applies, and how the URL is shown without credentials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from imgrag._errors import ConnectorError, CredentialError

Kind = Literal["foundry", "serverless", "managed"]

# Microsoft Entra scopes by endpoint kind: Foundry resources accept Cognitive Services
# tokens; managed online endpoints accept Azure Machine Learning tokens; serverless API
# endpoints accept keys only.
SCOPES: dict[Kind, str | None] = {
    "foundry": "https://cognitiveservices.azure.com/.default",
    "managed": "https://ml.azure.com/.default",
    "serverless": None,
}
_FOUNDRY_HOSTS = (".services.ai.azure.com", ".cognitiveservices.azure.com")
_EXAMPLE = "https://<resource>.services.ai.azure.com/models"


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    """Where requests go, without userinfo (httpx would log it at INFO)."""
    shown: str
    """What errors and logs print: the same URL."""
    kind: Kind
    userinfo: tuple[str, str] | None = None
    """Credentials written into the URL, sent as HTTP basic auth as httpx would."""


def without_userinfo(url: str) -> str:
    """``https://user:secret@host/p`` -> ``https://host/p``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def detect_kind(host: str) -> Kind:
    host = host.lower()
    if host.endswith(".models.ai.azure.com"):
        return "serverless"
    if host.endswith(".inference.ml.azure.com"):
        return "managed"
    return "foundry"  # Foundry resources, and anything else speaking the same API


def resolve(endpoint: str, kind: str = "auto") -> Endpoint:
    """Check and complete an endpoint URL: Foundry resources get ``/models`` when the path is
    empty; serverless and managed endpoints are used as given."""
    endpoint = endpoint.strip().rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConnectorError(
            f"endpoint {without_userinfo(endpoint)!r} is not a URL: set [embedder] endpoint "
            f"or AZURE_INFERENCE_ENDPOINT to e.g. {_EXAMPLE}"
        )
    found: Kind = detect_kind(parts.hostname) if kind == "auto" else kind  # type: ignore[assignment]
    if (
        found == "foundry"
        and parts.path in {"", "/"}
        and parts.hostname.lower().endswith(_FOUNDRY_HOSTS)
    ):
        endpoint += "/models"
    userinfo = None
    if parts.username is not None:
        userinfo = (unquote(parts.username), unquote(parts.password or ""))
    clean = without_userinfo(endpoint)
    return Endpoint(clean, clean, found, userinfo)


def entra_scope(kind: Kind, configured: str) -> str:
    """The scope to ask Entra ID for; an explicit ``[embedder] entra_scope`` wins."""
    if configured:
        return configured
    scope = SCOPES[kind]
    if scope is None:
        raise CredentialError(
            "serverless API endpoints (*.models.ai.azure.com) take no Microsoft Entra ID "
            'tokens: use [embedder] auth = "key" with the endpoint\'s key in '
            "AZURE_INFERENCE_CREDENTIAL"
        )
    return scope
