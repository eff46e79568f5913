"""The console: its settings, and the web application wired to the services it calls."""

from __future__ import annotations

from .entrypoints.web import ConsoleApp
from .settings import ConsoleSettings

__all__ = ["ConsoleApp", "ConsoleSettings", "bootstrap"]


def bootstrap(settings: ConsoleSettings | None = None) -> ConsoleApp:
    return ConsoleApp(settings or ConsoleSettings())
