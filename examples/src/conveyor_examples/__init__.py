"""Example model projects shipped with Conveyor, each with a traffic generator."""

from __future__ import annotations

import importlib.resources
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor_contracts import ModelProject

__all__ = ["load_project", "project_names", "sample_records"]


def project_names() -> list[str]:
    root = importlib.resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.joinpath("project.json").is_file())


def load_project(name: str) -> ModelProject:
    text = importlib.resources.files(__name__).joinpath(name, "project.json").read_text()
    return ModelProject.model_validate(json.loads(text))


def sample_records(
    name: str, n: int, *, seed: int = 0, end: datetime | None = None
) -> list[dict[str, Any]]:
    """`n` labeled records of an example project, as an application would load them: each the
    record's fields with its label field set, the newest at `end` (default: now). The wine data
    set has 178 analyses: more than that repeats them, shuffled anew, an hour apart as before."""
    spec = load_project(name)
    end = end or datetime.now(UTC)
    label = spec.label.field
    if name == "fraud":
        from .fraud.traffic import FraudTraffic

        payments = FraudTraffic(seed=seed).history(n, end, timedelta(days=7))
        return [p.fields | {label: p.truth} for p in payments]
    if name == "wine":
        from .wine.traffic import analyses

        start = end - timedelta(hours=n - 1)
        out: list[dict[str, Any]] = []
        while len(out) < n:
            later = start + timedelta(hours=len(out))
            out += [f | {label: truth} for f, truth in analyses(later, seed + len(out))]
        return out[:n]
    raise ValueError(f"no sample data for {name!r} (examples: {', '.join(project_names())})")
