"""``az://<account>/<container>[/prefix]`` and blob URLs that never carry a SAS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from imgrag._errors import BlobUriError

# Storage account names: 3-24 lowercase letters and digits. Container names: 3-63 of
# lowercase letters, digits and single hyphens, starting and ending alphanumeric
# (Azure Storage naming rules; `$root` and `$web` are the special containers).
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^(?:\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")


@dataclass(frozen=True)
class BlobLocation:
    """Account, container and an optional name prefix (``""`` = the whole container)."""

    account: str
    container: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        tail = f"/{self.prefix}" if self.prefix else ""
        return f"az://{self.account}/{self.container}{tail}"

    @property
    def default_account_url(self) -> str:
        return f"https://{self.account}.blob.core.windows.net"

    @property
    def default_queue_url(self) -> str:
        return f"https://{self.account}.queue.core.windows.net"


def parse_az_uri(uri: str) -> BlobLocation:
    """Parse ``az://account/container[/prefix]``; the prefix keeps a trailing ``/`` if given."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "az":
        raise BlobUriError(
            f"{uri!r} is not an az:// address; write az://<account>/<container>[/prefix]"
        )
    if "?" in rest or "#" in rest:
        # A SAS pasted into the address would end up in logs and payloads.
        raise BlobUriError(
            "an az:// address takes no query; give a SAS token in the source's `sas_token` "
            "or AZURE_STORAGE_SAS_TOKEN instead"
        )
    account, _, tail = rest.partition("/")
    container, _, prefix = tail.partition("/")
    if not _ACCOUNT.match(account):
        raise BlobUriError(
            f"{account!r} is not a storage account name (3-24 lowercase letters and digits); "
            "write az://<account>/<container>[/prefix]"
        )
    if not _CONTAINER.match(container):
        raise BlobUriError(
            f"{container!r} is not a container name (3-63 lowercase letters, digits, hyphens); "
            "write az://<account>/<container>[/prefix]"
        )
    return BlobLocation(account=account, container=container, prefix=prefix.lstrip("/"))


def without_query(url: str) -> str:
    """The URL with any query (a SAS token) and fragment removed."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def blob_url(container_url: str, name: str) -> str:
    """The public URL of one blob, never with a SAS: what a search hit shows as ``abs_path``."""
    base = without_query(container_url).rstrip("/")
    return f"{base}/{quote(name, safe='/~')}"
