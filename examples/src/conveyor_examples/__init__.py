"""Example model projects shipped with Conveyor, each with a traffic generator."""

from __future__ import annotations

import importlib.resources
import json

from conveyor_contracts import ModelProject

__all__ = ["load_project", "project_names"]


def project_names() -> list[str]:
    root = importlib.resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.joinpath("project.json").is_file())


def load_project(name: str) -> ModelProject:
    text = importlib.resources.files(__name__).joinpath(name, "project.json").read_text()
    return ModelProject.model_validate(json.loads(text))
