"""Which proxy the calls to a base URL take: ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``,
read as curl, pip and google-genai read them.

The variable of the URL's scheme names the proxy (lowercase first, as curl and Python's
``urllib`` do); ``NO_PROXY`` lists hosts and domain suffixes that go direct (``*``: all), matched
as ``urllib`` (and so aiohttp's ``trust_env``) matches them: the host itself, or a name ending
in ``.`` + an entry. An https call goes through the
proxy as a CONNECT tunnel, so the key stays inside TLS; an http call is handed to the proxy
whole. Loopback (127.0.0.0/8, ::1, localhost) never goes through a proxy, as in Go's net/http:
a proxy would reach its own loopback, not this machine's (the emulator, a local gateway).

Why not aiohttp's ``trust_env=True``: it also reads ``~/.netrc`` before every request and would
send a matching (or ``default``) login to the API host as Basic auth, beside the key; it ignores
an ``https://`` or ``socks5://`` proxy without a word (the run would go direct); and it decides
per request in a thread. Here the decision is made once per transport, and said by ``validate``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from batchgen.errors import JobError
from batchgen.job.wire import unsendable
from batchgen.redact import is_loopback, redact_url

__all__ = ["Proxy", "proxy_for"]


@dataclass(frozen=True)
class Proxy:
    """A proxy to send through: its URL without credentials, the header that carries them,
    and the variable that named it."""

    url: str
    headers: Mapping[str, str]  # Proxy-Authorization when the URL has credentials
    variable: str
    shown: str  # the URL as the variable gave it, credentials as ***

    def describe(self) -> str:
        return f"{self.shown} (from ${self.variable})"


def proxy_for(base_url: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy calls to ``base_url`` take, or None when they go direct; a JobError naming
    the variable when its value cannot be used (the value's credentials never shown)."""
    env = os.environ if environ is None else environ
    parts = urlsplit(base_url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if not host or is_loopback(host):
        return None
    named = [v for v in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if env.get(v, "").strip()]
    if not named:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if _bypassed(host, no_proxy):
        return None
    variable = named[0]
    return _parsed(env[variable].strip(), variable)


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY sends ``host`` direct: ``*``, the host, or a domain it is under."""
    if no_proxy.strip() == "*":
        return True
    host = host.lower().rstrip(".")
    for entry in no_proxy.split(","):
        name = entry.strip().lstrip(".").lower()
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _parsed(value: str, variable: str) -> Proxy:
    """The proxy a variable names; ``host:port`` alone means http, as curl reads it."""
    url = value if "://" in value else f"http://{value}"
    shown = redact_url(url)
    problem = unsendable(url) or ("a space" if " " in url else None)
    if problem is not None:
        raise JobError(f"${variable} holds {problem}; set it to the proxy's URL alone")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host:
        raise JobError(f"${variable} {shown}: not a proxy URL; write http://host:port")
    if parts.scheme.lower() != "http":
        raise JobError(
            f"${variable} {shown}: batchgen goes through http:// proxies only (https calls still "
            "tunnel inside TLS through them); use the proxy's http:// address, or unset it"
        )
    auth = {}
    if parts.username is not None:  # Basic, as curl sends it
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = {"Proxy-Authorization": f"Basic {base64.b64encode(pair).decode()}"}
    netloc = f"[{host}]" if ":" in host else host
    bare = f"http://{netloc}" + (f":{port}" if port is not None else "")
    return Proxy(bare, auth, variable, shown)
