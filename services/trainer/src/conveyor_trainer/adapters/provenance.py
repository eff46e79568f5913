"""Which code trained a model: the git commit (and whether the tree was dirty) and the hash
of `uv.lock`, read from the checkout the trainer runs from — or, in an image built without
one, from CONVEYOR_GIT_COMMIT, CONVEYOR_GIT_DIRTY and CONVEYOR_UV_LOCK_SHA256."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any


def _root() -> Path | None:
    """The workspace root: the nearest parent of this package holding `uv.lock`."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").is_file():
            return parent
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_provenance() -> dict[str, Any]:
    root = _root()
    commit = os.environ.get("CONVEYOR_GIT_COMMIT") or (root and _git(root, "rev-parse", "HEAD"))
    dirty: bool | None = None
    if flag := os.environ.get("CONVEYOR_GIT_DIRTY"):
        dirty = flag.lower() in ("1", "true", "yes")
    elif root is not None and commit:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    lock = os.environ.get("CONVEYOR_UV_LOCK_SHA256")
    if lock is None and root is not None:
        lock = hashlib.sha256((root / "uv.lock").read_bytes()).hexdigest()
    url = os.environ.get("CONVEYOR_GIT_URL") or (
        root and commit and _git(root, "config", "--get", "remote.origin.url")
    )
    return {
        "git_commit": commit or None,
        "git_dirty": dirty,
        "git_url": url or None,
        "uv_lock_sha256": lock,
    }
