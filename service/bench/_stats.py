"""Percentiles, bounded timing loops and a description of the machine."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Loop", "load_average", "machine", "percentiles", "rss_kib", "timed_loop"]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank), mean and count of durations given in seconds, in ms."""
    if not samples_s:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan}
    ordered = sorted(samples_s)

    def rank(p: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))] * 1000

    return {
        "n": len(ordered),
        "p50": round(rank(50), 3),
        "p95": round(rank(95), 3),
        "p99": round(rank(99), 3),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
    }


class Loop:
    """A loop bounded by a call count and a time budget (whichever ends first; at least one call)."""

    def __init__(self, calls: int, max_seconds: float) -> None:
        self.calls = calls
        self.deadline = time.perf_counter() + max_seconds
        self.done = 0

    def more(self) -> bool:
        if self.done >= self.calls or (self.done > 0 and time.perf_counter() > self.deadline):
            return False
        self.done += 1
        return True


async def timed_loop(call: Callable[[], Awaitable[Any]], calls: int, max_seconds: float) -> list[float]:
    """Durations (seconds) of ``call`` repeated within the loop's bounds."""
    samples: list[float] = []
    loop = Loop(calls, max_seconds)
    while loop.more():
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and Python version, and the date of the run."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mib": _memory_total_mib(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews every number."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process from /proc (KiB), or None where there is no procfs."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
