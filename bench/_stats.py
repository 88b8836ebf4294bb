"""Summaries of samples: percentiles the way the targets quote them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["percentile", "summary"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """n, p50, p90, p99, max and mean of `samples` (seconds), times `scale` (ms by default)."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 50) * scale, 3),
        "p90": round(percentile(samples, 90) * scale, 3),
        "p99": round(percentile(samples, 99) * scale, 3),
        "max": round(max(samples) * scale, 3),
        "mean": round(statistics.fmean(samples) * scale, 3),
    }
