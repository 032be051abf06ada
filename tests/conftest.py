"""Shared fixtures: an isolated environment, the seed fixture, a project copy, and the one
emulator factory. Helpers that are not fixtures live in tests/helpers/."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.emulator.server import APP_KEY, Emulator, RedactingAccessLogger, create_app
from tests.helpers.emulator_calls import Client, StartEmulator
from tests.helpers.paths import ROOT, SEED_COPY
from tests.helpers.s3 import AWS_VARIABLES, S3, S3_SECRET

_BUCKETS = iter(range(10**9))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real key ever reaches a test by accident, nor a proxy set in the shell."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)  # google-genai's name, read first
    for name in AWS_VARIABLES:  # no real store is reached: only the loopback one (s3 below)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def seed() -> dict[str, Any]:
    """The real request/response pair (gemini-2.5-flash, with thinking tokens)."""
    return json.loads(SEED_COPY.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of jobs/ and sample_inputs/ so that runs write only under tmp_path."""
    for folder in ("jobs", "sample_inputs"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@contextlib.contextmanager
def _emulators() -> Iterator[StartEmulator]:
    with contextlib.ExitStack() as stack:

        def start(
            config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", **fields: Any
        ) -> EmulatorThread:
            server = EmulatorThread(config or EmulatorConfig(**fields), host=host)
            return stack.enter_context(server)

        yield start


@pytest.fixture
def emulator_factory() -> Iterator[StartEmulator]:
    """Start emulators on 127.0.0.1, each serving from its own thread, stopped after the test:
    ``emulator_factory(api_keys=frozenset({KEY}), latency_ms=15)`` (EmulatorConfig's fields,
    or a whole config; ``host=`` another loopback address)."""
    with _emulators() as start:
        yield start


@pytest.fixture(scope="module")
def module_emulator_factory() -> Iterator[StartEmulator]:
    """:func:`emulator_factory` for a module's tests to share (stopped after the module)."""
    with _emulators() as start:
        yield start


@pytest.fixture
def make_client(
    aiohttp_server: Any, aiohttp_client: Any
) -> Callable[..., Awaitable[tuple[Client, Emulator]]]:
    """The emulator app in the test's loop behind a real aiohttp client (for the emulator's own
    tests, which read its state); kwargs build the config."""

    async def make(**config: Any) -> tuple[Client, Emulator]:
        app = create_app(EmulatorConfig(**config))
        # The access log the emulator's own servers use: no query string, so no ?key=.
        server = await aiohttp_server(app, access_log_class=RedactingAccessLogger)
        return await aiohttp_client(server), app[APP_KEY]

    return make


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto's) on 127.0.0.1, one for the session; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the loopback S3 server, and the AWS_* variables that reach it, set as
    a user sets them."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    store = S3(s3_endpoint, f"bucket-{next(_BUCKETS)}")
    store.client.create_bucket(Bucket=store.bucket)
    return store


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray instance (2 CPUs, no dashboard), started once a session by the first test
    that runs Ray and joined by every run after it; yields its address (for --ray-address)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
