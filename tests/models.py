"""Real small ONNX models for serving tests, made with the trainer's own export."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from conveyor_contracts import ModelProject
from conveyor_trainer.domain import training


@dataclass
class Model:
    onnx: bytes
    sha256: str
    signature: dict[str, Any]
    metrics: dict[str, float]
    profile: dict[str, Any]

    def registration(self, run_id: str, project_version: int = 1) -> dict[str, Any]:
        """The body that registers this model as a ready version (the registry's API)."""
        return {
            "run_id": run_id,
            "project_version": project_version,
            "status": "ready",
            "metrics": self.metrics,
            "signature": self.signature,
            "profile": self.profile,
            "lineage": {"training_rows": 400, "trigger": "test"},
            "onnx_base64": base64.b64encode(self.onnx).decode(),
        }


def make_model(spec: ModelProject, flip: bool = False, seed: int = 0) -> Model:
    """A model whose positive class follows feature 0 (or its opposite when `flip`)."""
    rng = np.random.default_rng(seed)
    k = len(spec.feature_names())
    x = rng.normal(size=(400, k)).astype(np.float32)
    y = ((x[:, 0] > 0) != flip).astype(np.int64)
    candidate = training.train(spec, training.Dataset(x, y), 0.25)
    return Model(
        candidate.onnx,
        hashlib.sha256(candidate.onnx).hexdigest(),
        candidate.signature,
        candidate.metrics,
        candidate.profile,
    )
