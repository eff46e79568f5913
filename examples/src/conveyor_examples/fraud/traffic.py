"""Synthetic card payments with a known concept drift.

Before the drift, fraud is large foreign payments at electronics and online merchants at night.
After it, fraudsters switch to many small domestic grocery and fuel payments in daytime: the
amount distribution shifts down and the relation between features and label changes, so the old
model's accuracy falls and a model retrained on post-drift labels recovers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

MERCHANTS = ("grocery", "fuel", "travel", "electronics", "online")


@dataclass(frozen=True)
class Payment:
    fields: dict[str, Any]
    truth: str


class FraudTraffic:
    def __init__(self, seed: int = 0, customers: int = 400) -> None:
        self.rng = np.random.default_rng(seed)
        self.customers = customers

    def payment(self, ts: datetime, *, drifted: bool) -> Payment:
        rng = self.rng
        customer = f"c-{int(rng.integers(0, self.customers))}"
        if drifted:
            amount = float(np.round(rng.lognormal(2.6, 0.8), 2))
            merchant = MERCHANTS[int(rng.choice(5, p=[0.35, 0.25, 0.1, 0.15, 0.15]))]
            hour = int(rng.integers(6, 22))
            foreign = bool(rng.random() < 0.1)
            score = (
                -1.6 * (math.log1p(amount) - 2.7)
                + (1.4 if merchant in ("grocery", "fuel") else -1.0)
                - 0.9 * foreign
                + rng.normal(0, 0.6)
            )
        else:
            amount = float(np.round(rng.lognormal(4.0, 1.0), 2))
            merchant = MERCHANTS[int(rng.choice(5, p=[0.25, 0.2, 0.15, 0.2, 0.2]))]
            hour = int(rng.integers(0, 24))
            foreign = bool(rng.random() < 0.3)
            night = hour < 6 or hour >= 22
            score = (
                1.5 * (math.log1p(amount) - 4.5)
                + (1.2 if merchant in ("electronics", "online") else -0.8)
                + 1.3 * foreign
                + 0.8 * night
                + rng.normal(0, 0.6)
            )
        truth = "fraud" if score > 0 else "legit"
        fields = {
            "customer": customer,
            "ts": ts.isoformat(),
            "amount": min(amount, 100000.0),
            "merchant": merchant,
            "hour": hour,
            "foreign": foreign,
        }
        return Payment(fields, truth)

    def history(self, n: int, end: datetime, span: timedelta) -> list[Payment]:
        """`n` labeled pre-drift payments spread evenly over `span` before `end`."""
        step = span / n
        return [self.payment(end - span + i * step, drifted=False) for i in range(n)]
