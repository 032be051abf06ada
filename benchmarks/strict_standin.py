"""A second strict-window server, written apart from the emulator: a rate-limiting proxy.

The emulator's window (``batchgen/emulator/quota.py``) counts only the requests it accepted,
and its 429 carries QuotaFailure and RetryInfo. A gateway in front of the real API is often
simpler, and this stand-in does what such gateways commonly do instead:

- every request that arrives enters the rolling 60 s window, refused ones too;
- a 429 carries only ``Retry-After`` in whole seconds (rounded up), or none at all, and a body
  with no quota details;
- the window is keyed on arrival at the proxy.

Accepted requests are passed to an upstream server (the emulator with no limits, for its
answers and latency); the proxy keeps its own counts at the stats path the benchmarks poll.
Run as ``python benchmarks/strict_standin.py UPSTREAM_URL RPM [retry-after|none]``; it prints
its URL on the first line.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter, deque
from typing import Any

import psutil

STATS_PATH = "/_emulator/stats"
WINDOW = 60.0
_PASSED = ("x-goog", "content-type")  # the key and the body's type


def make_app(upstream: str, rpm: int, retry_after: bool) -> Any:
    """The proxy's aiohttp application."""
    import aiohttp
    from aiohttp import web

    arrivals: deque[float] = deque()  # every request's arrival, oldest first
    counts: Counter[str] = Counter()

    def refused(now: float) -> float | None:
        """Seconds until the window has room, or None if this request is admitted."""
        while arrivals and arrivals[0] <= now - WINDOW:
            arrivals.popleft()
        full = len(arrivals) >= rpm
        arrivals.append(now)  # counted whether admitted or not
        return arrivals[0] + WINDOW - now if full else None

    async def generate(request: web.Request) -> web.StreamResponse:
        counts["generateContent"] += 1
        wait = refused(time.monotonic())
        body = await request.read()
        if wait is not None:
            counts["status:429"] += 1
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if retry_after else {}
            error = {"error": {"code": 429, "message": "Too many requests", "status":
                               "RESOURCE_EXHAUSTED"}}  # fmt: skip
            return web.json_response(error, status=429, headers=headers)
        session: aiohttp.ClientSession = request.app["session"]
        url = upstream + request.path_qs
        passed = {k: v for k, v in request.headers.items() if k.lower().startswith(_PASSED)}
        async with session.post(url, data=body, headers=passed) as resp:
            raw = await resp.read()
            counts[f"status:{resp.status}"] += 1
            return web.Response(body=raw, status=resp.status, content_type="application/json")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    async def open_session(app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(limit=0)
        app["session"] = aiohttp.ClientSession(connector=connector)
        yield
        await app["session"].close()

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post(r"/{path:.*}", generate)
    app.router.add_get(STATS_PATH, stats)
    app.cleanup_ctx.append(open_session)
    return app


class StandinProcess:
    """The stand-in in a child process, with the attributes the paced harness reads."""

    def __init__(self, upstream: str, rpm: int, mode: str = "retry-after") -> None:
        self.args = [sys.executable, __file__, upstream, str(rpm), mode]
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.port = 0

    def __enter__(self) -> StandinProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.__exit__()
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        self.base_url, self.port = match.group(0), int(match.group(1))
        self.ps = psutil.Process(self.proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system


def main() -> None:
    import asyncio

    from aiohttp import web

    upstream, rpm, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    async def serve() -> None:
        runner = web.AppRunner(make_app(upstream, rpm, mode == "retry-after"))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
