"""An offline Gemini API (v1beta) for tests, benchmarks and dry runs: an ``aiohttp.web`` app.

An oracle, not a mirror of the client: it imports nothing from the rest of batchgen (only the
standard library, aiohttp and rstr), so a misreading of the API in batchgen's client cannot be
copied into the stand-in that checks it.

Modules: :mod:`.server` (the app, its config and ways to run it), :mod:`.wire` (reading request
bodies as the API does), :mod:`.replies` (response bodies), :mod:`.fakedata` (values that
conform to a schema), :mod:`.quota` (rate-limit windows), :mod:`.latency` (latency models),
:mod:`.hostile` (misbehaving-proxy modes), :mod:`.caches` (cachedContents).
"""

from batchgen.emulator.server import (
    APP_KEY,
    FAULTS,
    KNOWN_MODELS,
    STATS_PATH,
    Emulator,
    EmulatorConfig,
    EmulatorServer,
    EmulatorThread,
    RedactingAccessLogger,
    create_app,
    estimate_tokens,
    serve,
)

__all__ = [
    "APP_KEY",
    "FAULTS",
    "KNOWN_MODELS",
    "STATS_PATH",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorThread",
    "RedactingAccessLogger",
    "create_app",
    "estimate_tokens",
    "serve",
]
