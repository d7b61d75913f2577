"""Shared helpers for the benchmarks: timing, peak memory, result files."""

from __future__ import annotations

import json
import platform
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer() -> Iterator[list[float]]:
    out: list[float] = []
    t0 = time.perf_counter()
    yield out
    out.append(time.perf_counter() - t0)


def machine() -> dict:
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))
    return path


def median(xs: list[float]) -> float:
    return float(np.median(xs))
