"""Real small ONNX models for serving tests, made with the trainer's own export, and the
examples' labeled rows as the platform featurizes them."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from conveyor_contracts import ModelProject, contract_of
from conveyor_examples import load_project
from conveyor_examples.fraud import traffic as fraud_traffic
from conveyor_examples.wine import traffic as wine_traffic
from conveyor_feature.domain.features import PastRecord, featurize
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


def example_dataset(name: str) -> tuple[ModelProject, training.Dataset]:
    """An example project's labeled rows as the platform makes them: its traffic generator's
    records, checked by the project's contract and featurized in event-time order, each with
    its entity's earlier records (the per-entity features)."""
    spec = load_project(name)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    if name == "wine":
        records = wine_traffic.analyses(start, seed=3)
    else:
        traffic = fraud_traffic.FraudTraffic(seed=3)
        payments = traffic.history(spec.policies.retrain.train_rows, start, timedelta(days=2))
        records = [(p.fields, p.truth) for p in payments]
    contract = contract_of(spec)
    histories: dict[str, list[PastRecord]] = {}
    rows = []
    for i, (fields, truth) in enumerate(records):
        record = contract.validate(fields, record_id=f"r{i}", source="test", now=start)
        history = histories.setdefault(record.entity_id, [])
        values = featurize(spec, record.fields, record.event_time, history)
        history.append(PastRecord(record.record_id, record.event_time, record.fields))
        rows.append((values, truth))
    return spec, training.dataset(spec, rows)
