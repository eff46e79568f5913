"""The generators in tools/ as modules (tools/ is not a package: its scripts run as files)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load(name: str) -> ModuleType:
    """tools/<name>.py, imported as its scripts are run: with tools/ on the path, so that it
    finds its sibling modules."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)
