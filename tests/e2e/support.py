"""Helpers of the end-to-end tests, which drive service processes from synchronous code."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def until(probe: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `probe` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment contains `marker` (this process excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
