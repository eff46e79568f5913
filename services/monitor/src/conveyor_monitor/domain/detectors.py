"""Drift tests, free of I/O.

A window drifts when a feature's distribution differs from the reference both *significantly*
(two-sample Kolmogorov-Smirnov, Benjamini-Hochberg across features at the policy's alpha) and
*materially* (Wasserstein distance over the reference's spread at least `min_effect`), or when
accuracy on labeled predictions fell significantly (one-sided binomial test) and by at least
`min_accuracy_drop`. A model that gets better raises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, ks_2samp, wasserstein_distance

from conveyor_contracts.events import FeatureDrift
from conveyor_contracts.project import DriftPolicy

MAX_EFFECT = 100.0


def benjamini_hochberg(p_values: list[float], alpha: float) -> list[bool]:
    """Which hypotheses are rejected with the false discovery rate held at `alpha`."""
    m = len(p_values)
    order = np.argsort(p_values)
    ranked = np.asarray(p_values)[order]
    below = np.nonzero(ranked <= alpha * np.arange(1, m + 1) / m)[0]
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below[-1] + 1]] = True
    return rejected.tolist()


def effect_size(window: np.ndarray, reference: np.ndarray) -> float:
    """Wasserstein distance in units of the reference's standard deviation (defined for
    constant columns: the window's spread stands in, and two equal constants give 0)."""
    distance = float(wasserstein_distance(window, reference))
    if distance == 0.0:
        return 0.0
    scale = float(np.std(reference)) or float(np.std(window))
    if scale == 0.0:
        return 1.0  # two different constants: a categorical flip
    return min(distance / scale, MAX_EFFECT)


@dataclass(frozen=True)
class DataVerdict:
    drifted: bool
    features: list[FeatureDrift]


def data_drift(
    window: np.ndarray, reference: np.ndarray, names: list[str], policy: DriftPolicy
) -> DataVerdict:
    stats, p_values, effects = [], [], []
    for j in range(window.shape[1]):
        w, r = window[:, j], reference[:, j]
        if np.array_equal(np.unique(w), np.unique(r)) and np.unique(w).size == 1:
            stats.append(0.0)
            p_values.append(1.0)  # both constant and equal: nothing to test
        else:
            result = ks_2samp(w, r)
            stats.append(float(result.statistic))
            p_values.append(float(result.pvalue))
        effects.append(effect_size(w, r))
    significant = benjamini_hochberg(p_values, policy.alpha)
    features = [
        FeatureDrift(
            feature=n, statistic=s, p_value=p, effect=e, drifted=sig and e >= policy.min_effect
        )
        for n, s, p, e, sig in zip(names, stats, p_values, effects, significant, strict=True)
    ]
    return DataVerdict(any(f.drifted for f in features), features)


@dataclass(frozen=True)
class PerformanceVerdict:
    drifted: bool
    accuracy: float
    p_value: float


def performance_drift(
    correct: int, total: int, reference_accuracy: float, policy: DriftPolicy
) -> PerformanceVerdict:
    accuracy = correct / total
    p = float(
        binomtest(
            correct, total, min(max(reference_accuracy, 1e-9), 1 - 1e-9), alternative="less"
        ).pvalue
    )
    drop = reference_accuracy - accuracy
    return PerformanceVerdict(p < policy.alpha and drop >= policy.min_accuracy_drop, accuracy, p)


def episode_opens(recent: list[bool], policy: DriftPolicy) -> bool:
    """k of the last n windows drifted (newest last)."""
    return sum(recent[-policy.n :]) >= policy.k
