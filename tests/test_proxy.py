"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY, through a real forwarding proxy on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import JobError
from batchgen.gemini.proxy import proxy_for
from tests.helpers.emulator_calls import StartEmulator

KEY = "test-key-123456"
HOST = "gemini.invalid"  # resolves nowhere: only the proxy can reach it


@dataclass
class Relayed:
    method: str
    target: str
    head: bytes


@dataclass
class RecordingProxy:
    """An HTTP forward proxy: an absolute-URI request for any host is relayed to
    127.0.0.1:``upstream_port``; a CONNECT is recorded and refused (403)."""

    upstream_port: int
    seen: list[Relayed] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        self.seen.append(Relayed(method, target, head))
        if method == "CONNECT":
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
            return
        path = "/" + target.split("://", 1)[1].split("/", 1)[1]
        lines = head.decode().split("\r\n")[1:]
        kept = [line for line in lines if line and not line.lower().startswith(
            ("connection:", "proxy-connection:", "proxy-authorization:"))]  # fmt: skip
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        upstream_w.write(
            "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""]).encode()
        )
        upload = asyncio.ensure_future(_pipe(reader, upstream_w))
        try:
            await _pipe(upstream_r, writer)  # the answer, until the emulator closes
        finally:
            upload.cancel()
            await asyncio.gather(upload, return_exceptions=True)
            for w in (upstream_w, writer):
                w.close()
                await asyncio.gather(w.wait_closed(), return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(65536):
        sink.write(chunk)
        await sink.drain()


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


@pytest.fixture
def proxy(emulator: EmulatorThread) -> Iterator[RecordingProxy]:
    port = int(emulator.base_url.rsplit(":", 1)[1])
    with RecordingProxy(port) as running:
        yield running


def _job(project: Path) -> str:
    job = project / "jobs" / "cookie_recipes.toml"
    if "[retry]" not in job.read_text():  # a refused call fails at once
        job.write_text(job.read_text() + "\n[retry]\nattempts = 1\n")
    return str(job)


def test_calls_go_through_the_proxy_http_proxy_names(
    project: Path, emulator: EmulatorThread, proxy: RecordingProxy
) -> None:
    port = emulator.base_url.rsplit(":", 1)[1]
    base = f"http://{HOST}:{port}"
    env = {"GEMINI_API_KEY": KEY, "HTTP_PROXY": f"http://user:s%40cret@127.0.0.1:{proxy.port}"}
    shown = CliRunner().invoke(main, ["validate", _job(project), "--base-url", base], env=env)
    assert f"  proxy   http://***@127.0.0.1:{proxy.port} (from $HTTP_PROXY)" in shown.output
    assert "s%40cret" not in shown.output

    args = ["run", _job(project), "--base-url", base, "--limit", "3"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output + result.stderr
    posts = [r for r in proxy.seen if r.method == "POST"]
    assert len(posts) == 3 == len(emulator.emulator.received)
    assert all(
        r.target.startswith(f"{base}/v1beta/models/gemini-3.8-flash:generateContent") for r in posts
    )
    auth = base64.b64encode(b"user:s@cret").decode()
    assert all(f"Proxy-Authorization: Basic {auth}".encode() in r.head for r in posts)


def test_no_proxy_sends_the_calls_direct(project: Path, proxy: RecordingProxy) -> None:
    base = f"http://{HOST}:9"
    env = {"GEMINI_API_KEY": KEY, "http_proxy": f"127.0.0.1:{proxy.port}", "NO_PROXY": ".invalid"}
    shown = CliRunner().invoke(main, ["validate", _job(project), "--base-url", base], env=env)
    assert "  proxy   none: calls go direct" in shown.output
    args = ["run", _job(project), "--base-url", base, "--limit", "1"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1, result.output + result.stderr  # the row failed: no such host
    assert proxy.seen == []


def test_loopback_never_goes_through_a_proxy(
    project: Path, emulator: EmulatorThread, proxy: RecordingProxy
) -> None:
    env = {"GEMINI_API_KEY": KEY, "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}"}
    args = ["run", _job(project), "--base-url", emulator.base_url, "--limit", "2"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert proxy.seen == [] and len(emulator.emulator.received) == 2


def test_https_goes_through_a_connect_tunnel_the_proxy_cannot_read(
    project: Path, proxy: RecordingProxy
) -> None:
    env = {"GEMINI_API_KEY": KEY, "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}"}
    args = ["run", _job(project), "--base-url", f"https://{HOST}", "--limit", "1"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1, result.output + result.stderr  # the proxy refused the tunnel
    assert [(r.method, r.target) for r in proxy.seen] == [("CONNECT", f"{HOST}:443")]
    assert KEY.encode() not in proxy.seen[0].head


def test_which_variable_names_the_proxy() -> None:
    url = "https://generativelanguage.googleapis.com"
    env = {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2", "HTTP_PROXY": "http://c:3"}
    found = proxy_for(url, env)
    assert found is not None and (found.url, found.variable) == ("http://a:1", "https_proxy")
    assert proxy_for(url, {"HTTP_PROXY": "http://c:3"}) is None  # the https variable only
    assert proxy_for(url, {**env, "NO_PROXY": "googleapis.com"}) is None
    assert proxy_for(url, {**env, "no_proxy": "*"}) is None
    assert proxy_for(url, {**env, "NO_PROXY": "oogleapis.com"}) is not None
    assert proxy_for("http://localhost:8089", {"HTTP_PROXY": "http://c:3"}) is None
    with pytest.raises(JobError, match=r"^\$HTTPS_PROXY socks5://\*\*\*@p:1080: batchgen goes"):
        proxy_for(url, {"HTTPS_PROXY": "socks5://u:secret@p:1080"})
    with pytest.raises(JobError, match=r"^\$HTTPS_PROXY holds a line break"):
        proxy_for(url, {"HTTPS_PROXY": "http://p:1\nx"})


def test_a_proxy_that_cannot_be_used_is_a_job_error_before_any_call(
    project: Path, emulator: EmulatorThread
) -> None:
    env = {"GEMINI_API_KEY": KEY, "HTTPS_PROXY": "socks5://user:secret@proxy:1080"}
    args = ["run", _job(project), "--base-url", f"https://{HOST}", "--limit", "1"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output + result.stderr
    assert result.stderr.count("\n") == 1 and "$HTTPS_PROXY" in result.stderr
    assert "secret" not in result.output + result.stderr
