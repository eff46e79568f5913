"""Which processes are still alive that a test started (found by a marker in their environment)."""

from __future__ import annotations

import os


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
