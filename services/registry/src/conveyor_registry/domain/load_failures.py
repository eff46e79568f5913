"""The rule for versions serving reported it could not load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import Conflict


def check_loadable(project: str, version: int, failures: Sequence[dict[str, Any]]) -> None:
    """No alias moves to a version serving could not load: it would not serve it, and would
    keep serving the version before it under the alias's new name. The newest report names the
    failure."""
    if failures:
        last = failures[-1]
        raise Conflict(
            f"version {version} of {project!r} failed to load in serving ({last['replica']}, "
            f"as {last['alias']}): {last['reason']}"
        )
