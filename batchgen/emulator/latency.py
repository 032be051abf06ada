"""How long the emulator takes to answer: a fixed delay, uniform jitter, and a lognormal part.

Real generateContent latencies are skewed: most answers come near a typical time and a few take
several times longer (thinking models spend 5-60 s). A lognormal with a median and a spread
``sigma`` (of the natural log of the time) draws that shape: ``median * exp(sigma * N(0, 1))``, so
with sigma 0.5 one answer in ten takes more than 1.9x the median. Draws come from a seeded
generator, so a benchmark sees the same sequence of delays each time.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

__all__ = ["LatencyModel"]


class LatencySettings(Protocol):
    """The latency fields of EmulatorConfig."""

    latency_ms: float
    latency_jitter_ms: float
    latency_median_ms: float
    latency_sigma: float
    model_latency: dict[str, tuple[float, float]]
    seed: int


class LatencyModel:
    """Draws each answer's delay in seconds; the settings are read at every draw."""

    def __init__(self, settings: LatencySettings) -> None:
        self.settings = settings
        self._jitter = random.Random(f"jitter-{settings.seed}")
        self._lognormal = random.Random(f"latency-{settings.seed}")

    def seconds(self, model: str) -> float:
        """The delay of one answer from ``model``: fixed + jitter + lognormal, never below 0."""
        cfg = self.settings
        ms = cfg.latency_ms
        if cfg.latency_jitter_ms:
            ms += self._jitter.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
        median, sigma = cfg.model_latency.get(model, (cfg.latency_median_ms, cfg.latency_sigma))
        if median > 0:
            ms += median * math.exp(sigma * self._lognormal.gauss(0.0, 1.0)) if sigma else median
        return max(ms, 0.0) / 1000
