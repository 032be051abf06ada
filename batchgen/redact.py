"""URLs as batchgen may show or store them: credentials out, and where the key would travel.

A base URL may carry a proxy's credentials (``https://user:secret@proxy/``) or a key in its query
(``?key=…``, the form the API also accepts); neither belongs in a message, a log or a run record.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# Regular expressions rather than a URL parser: redaction must work on any text, even a URL so
# broken that a parser rejects it (an unclosed "[" in the host, say).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_KEY_PARAM = re.compile(r"([?&;]key=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its userinfo as ``***@`` and any ``key=`` query value as ``***``."""
    return _KEY_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def url_host(url: str) -> str:
    """The host of ``url`` (with the port when it names one), never its credentials."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unclosed IPv6 bracket
        return redact_url(url)
    if not host:
        return redact_url(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: 127.0.0.0/8, ::1, localhost."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 keeps these local
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def cleartext_warning(base_url: str) -> str | None:
    """One line when the API key would cross a network in clear text (http to another host)."""
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or is_loopback(host):
        return None
    return (
        f"model.base_url {redact_url(base_url)} is plain http to another machine: the API key "
        "travels in clear text; use https unless the network path is yours"
    )
