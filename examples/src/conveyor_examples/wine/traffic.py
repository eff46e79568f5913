"""Wine analyses from scikit-learn's bundled data set (no download), as records per cellar."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

NAMES = {"od280/od315_of_diluted_wines": "od280_od315"}


def analyses(start: datetime, seed: int = 0) -> list[tuple[dict[str, Any], str]]:
    """Every sample once, shuffled, one hour apart: (record fields, true cultivar)."""
    from sklearn.datasets import load_wine  # the examples need scikit-learn; services do not

    data = load_wine()
    order = np.random.default_rng(seed).permutation(len(data.target))
    out = []
    for i, row in enumerate(order):
        fields: dict[str, Any] = {
            NAMES.get(name, name): float(value)
            for name, value in zip(data.feature_names, data.data[row], strict=True)
        }
        fields["cellar"] = f"cellar-{int(row) % 12}"
        fields["analysed_at"] = (start + timedelta(hours=i)).isoformat()
        out.append((fields, str(data.target_names[data.target[row]])))
    return out
