"""Drift detectors, free of I/O.

A data window is tested against the reference (a sample of the version's training rows) on
every feature, on the predicted classes and on all features together:

- a numeric feature: two-sample Kolmogorov-Smirnov tests of the values and of their distances
  from the reference's median (the second sees a change of spread the first is blind to; the
  feature's p-value is the smaller of the two, doubled); effect = Wasserstein distance over the
  reference's standard deviation;
- a categorical feature (its one-hot columns read back as one value; a value the model never saw
  is its own bucket): chi-squared homogeneity test; effect = Jensen-Shannon distance, less the
  distance two samples of one distribution show by chance (`js_effect`);
- the predicted classes: the same test against the classes predicted on the holdout;
- all features at once: reconstruction error of a PCA fitted on the reference; one-sided
  Mann-Whitney test (only a worse fit counts); effect = the error's mean increase over its
  reference standard deviation.

PSI is reported for every feature. A window drifts when some test is significant with the false
discovery rate across the tests held at `alpha` (Benjamini-Hochberg) *and* its effect reaches the
policy's minimum. `alpha` is calibrated per reference: windows drawn by bootstrap from the
reference show how often the two gates fire on data that did not drift, and `alpha` is lowered
until that rate fits the false-alarm budget (`calibrate`). Performance alarms are one-sided: a
model that gets better raises nothing. Constant columns and unseen values give defined numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import kolmogorov
from scipy.stats import (
    binomtest,
    chi2_contingency,
    fisher_exact,
    mannwhitneyu,
    norm,
    wasserstein_distance,
)

from conveyor_contracts.events import FeatureDrift
from conveyor_contracts.project import DriftPolicy

MAX_EFFECT = 100.0
PSI_BINS = 10
PSI_EPS = 1e-4
PCA_VARIANCE = 0.9  # share of the reference's variance the PCA keeps
CALIBRATION_DRAWS = 400
MULTIVARIATE = "all features (PCA reconstruction)"
PREDICTION = "prediction"

Kind = Literal["numeric", "categorical", "prediction", "multivariate"]
# How a profile's rows were stored: live values are brought to the same precision before any
# comparison. "float32": the training rows as the model saw them; "decimals6": float32 rounded
# to 6 decimals (profiles registered before profiles named their precision); "exact": as given.
Precision = Literal["exact", "float32", "decimals6"]
LEGACY_PRECISION: Precision = "decimals6"


def conform(x: np.ndarray, precision: Precision) -> np.ndarray:
    """Values at the reference's precision, so that equal values compare equal: a discrete
    feature (a count, its logarithm) otherwise sits beside its reference twin in every row."""
    if precision == "float32":
        return x.astype(np.float32).astype(np.float64)
    if precision == "decimals6":
        return x.astype(np.float32).round(6).astype(np.float64)
    return x


@dataclass(frozen=True)
class Group:
    """One monitored feature: a numeric column, or the one-hot columns of a categorical."""

    name: str
    kind: Literal["numeric", "categorical"]
    columns: tuple[int, ...]
    categories: tuple[str, ...] = ()


def feature_groups(names: Sequence[str]) -> list[Group]:
    """Columns named `feature=value` are one categorical feature; the rest are numeric."""
    groups: dict[str, Group] = {}
    for j, name in enumerate(names):
        base, sep, value = name.partition("=")
        if not sep:
            groups[name] = Group(name, "numeric", (j,))
        elif base in groups:
            g = groups[base]
            groups[base] = replace(g, columns=(*g.columns, j), categories=(*g.categories, value))
        else:
            groups[base] = Group(base, "categorical", (j,), (value,))
    return list(groups.values())


def codes(x: np.ndarray, group: Group) -> np.ndarray:
    """A categorical's value index per row; `len(categories)` for a value it never saw."""
    block = x[:, list(group.columns)]
    return np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), len(group.categories))


# --- statistics -------------------------------------------------------------------------------


def ks_test(window: np.ndarray, reference_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value (Stephens' correction)."""
    w = np.sort(window)
    both = np.concatenate([w, reference_sorted])
    n, m = len(w), len(reference_sorted)
    d = float(
        np.abs(
            np.searchsorted(w, both, "right") / n
            - np.searchsorted(reference_sorted, both, "right") / m
        ).max()
    )
    en = math.sqrt(n * m / (n + m))
    return d, float(kolmogorov((en + 0.12 + 0.11 / en) * d)) if d > 0 else 1.0


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


def psi(window_counts: np.ndarray, reference_counts: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (smoothed: an empty bin
    on one side gives a large but finite value)."""
    p = window_counts / window_counts.sum() + PSI_EPS
    q = reference_counts / reference_counts.sum() + PSI_EPS
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True)
class Bins:
    """The reference's deciles as PSI bins, and the reference's counts in them."""

    edges: np.ndarray
    counts: np.ndarray
    side: Literal["left", "right"]

    @classmethod
    def deciles(
        cls, reference: np.ndarray, *, unique: bool, side: Literal["left", "right"]
    ) -> Bins:
        edges = np.quantile(reference, np.linspace(0, 1, PSI_BINS + 1)[1:-1])
        if unique:
            edges = np.unique(edges)
        return cls(edges, cls._count(edges, reference, side), side)

    @staticmethod
    def _count(edges: np.ndarray, values: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side), minlength=len(edges) + 1).astype(
            float
        )

    def psi(self, values: np.ndarray) -> float:
        return psi(self._count(self.edges, values, self.side), self.counts)


def homogeneity(window_counts: np.ndarray, reference_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test that two histograms come from one distribution; bins empty on both
    sides are dropped, and fewer than two bins left means nothing differs."""
    keep = (window_counts + reference_counts) > 0
    if keep.sum() < 2:
        return 0.0, 1.0
    result = chi2_contingency(np.vstack([window_counts[keep], reference_counts[keep]]))
    return float(result.statistic), float(result.pvalue)


def js_distance(window_counts: np.ndarray, reference_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two histograms."""
    return float(jensenshannon(window_counts, reference_counts, base=2))


def js_divergences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) of each row pair of two stacks of histograms."""
    p = a / a.sum(axis=-1, keepdims=True)
    q = b / b.sum(axis=-1, keepdims=True)
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log2(p / mid), 0.0)
        right = np.where(q > 0, q * np.log2(q / mid), 0.0)
    return np.asarray((left.sum(axis=-1) + right.sum(axis=-1)) / 2)


CHANCE_DRAWS = 200


def chance_divergence(window_counts: np.ndarray, reference_counts: np.ndarray) -> float:
    """The Jensen-Shannon divergence (bits) that 95 % of shuffles of the rows between a window
    and its reference stay below: what sampling alone puts between two samples of one
    distribution, values seen once included (a value seen once is always on one side only)."""
    pooled = np.rint(window_counts + reference_counts).astype(np.int64)
    n = round(float(window_counts.sum()))
    if n == 0 or n >= pooled.sum():
        return 0.0
    rng = np.random.default_rng(0)  # the same answer for the same histograms
    a = rng.multivariate_hypergeometric(pooled, n, size=CHANCE_DRAWS).astype(float)
    return float(np.quantile(js_divergences(a, pooled - a), 0.95))


def js_effect(window_counts: np.ndarray, reference_counts: np.ndarray, chance: float) -> float:
    """How far apart the distributions behind two histograms are at least: their Jensen-Shannon
    distance once the divergence `chance` that sampling alone reaches is taken off.

    Two samples of one distribution over many values differ by chance: with 50 values, 200 rows
    and 1,000 reference rows their plain distance is about 0.3, so it would pass any material
    gate on data that did not change. Taking off the divergence shuffles stay below 95 % of the
    time leaves a distance that is material only when it is more than chance."""
    divergence = js_distance(window_counts, reference_counts) ** 2
    return math.sqrt(max(0.0, divergence - chance))


def bh_adjusted(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values: hypothesis i is rejected at level q iff its
    adjusted p-value is at most q."""
    m = len(p_values)
    if m == 0:
        return []
    order = np.argsort(p_values)
    ranked = np.asarray(p_values, dtype=np.float64)[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


# --- the reference ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pca:
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # k x d

    def errors(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        residual = z - (z @ self.components.T) @ self.components
        return np.asarray((residual**2).mean(axis=1))


def fit_pca(x: np.ndarray) -> Pca:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    explained = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-12)
    k = int(np.searchsorted(explained, PCA_VARIANCE) + 1)
    return Pca(mean, scale, vt[: max(1, min(k, x.shape[1] - 1))])


@dataclass(frozen=True)
class Reference:
    """What one version's live traffic is compared with, prepared once."""

    names: list[str]
    groups: list[Group]
    sample: np.ndarray = field(repr=False)  # at `precision`
    sorted_columns: dict[int, np.ndarray] = field(repr=False)
    sorted_spreads: dict[int, np.ndarray] = field(repr=False)  # |value - median|, sorted
    numeric_bins: dict[int, Bins] = field(repr=False)
    category_counts: dict[str, np.ndarray] = field(repr=False)
    classes: list[str]
    prediction_counts: np.ndarray | None = field(repr=False)
    pca: Pca | None = field(repr=False)
    pca_errors: np.ndarray | None = field(repr=False)
    pca_bins: Bins | None = field(repr=False)
    precision: Precision = "exact"

    @property
    def rows(self) -> int:
        return len(self.sample)

    def tests(self) -> int:
        return len(self.groups) + (self.prediction_counts is not None) + (self.pca is not None)


def prepare(
    sample: np.ndarray,
    names: Sequence[str],
    prediction_shares: dict[str, float] | None = None,
    *,
    pca: Pca | None = None,
    seed: int = 0,
    precision: Precision = "exact",
) -> Reference:
    """The reference from a sample of training rows (stored at `precision`) and the holdout's
    predicted class shares.

    The PCA is fitted on one half of the sample and its errors are taken on the other, so that the
    reference errors are out of sample like live traffic's."""
    sample = conform(np.asarray(sample, dtype=np.float64), precision)
    groups = feature_groups(names)
    pca_errors = None
    if sample.shape[1] > 1 and len(sample) >= 20:
        if pca is None:
            order = np.random.default_rng(seed).permutation(len(sample))
            half = len(sample) // 2
            pca = fit_pca(sample[order[:half]])
            pca_errors = pca.errors(sample[order[half:]])
        else:
            pca_errors = pca.errors(sample)
    else:
        pca = None
    classes = list(prediction_shares or {})
    prediction_counts = (
        np.asarray([prediction_shares[c] for c in classes], dtype=np.float64) * len(sample)
        if prediction_shares
        else None
    )
    numeric = [g.columns[0] for g in groups if g.kind == "numeric"]
    sorted_columns = {j: np.sort(sample[:, j]) for j in numeric}
    return Reference(
        names=list(names),
        groups=groups,
        sample=sample,
        sorted_columns=sorted_columns,
        sorted_spreads={
            j: np.sort(np.abs(sample[:, j] - np.median(sorted_columns[j]))) for j in numeric
        },
        numeric_bins={
            j: Bins.deciles(sorted_columns[j], unique=True, side="right") for j in numeric
        },
        category_counts={
            g.name: np.bincount(codes(sample, g), minlength=len(g.categories) + 1).astype(float)
            for g in groups
            if g.kind == "categorical"
        },
        classes=classes,
        prediction_counts=prediction_counts,
        pca=pca,
        pca_errors=pca_errors,
        pca_bins=Bins.deciles(pca_errors, unique=False, side="left")
        if pca_errors is not None
        else None,
        precision=precision,
    )


def reference_from_profile(profile: Mapping[str, Any]) -> Reference:
    """The reference of a version from its registered profile."""
    return prepare(
        profile["sample"],
        profile["feature_names"],
        profile.get("predictions"),
        precision=profile.get("precision", LEGACY_PRECISION),
    )


def prediction_codes(predicted: Sequence[str | None], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index.get(p, -1) if p is not None else -1 for p in predicted])


# --- one window -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataVerdict:
    drifted: bool
    features: list[FeatureDrift]
    alpha: float

    @property
    def score(self) -> float:
        """The smallest FDR level at which this window would drift (1 when no effect is big
        enough): what calibration ranks windows by."""
        return min((f.q_value for f in self.features if f.material), default=1.0)


def _numeric(window: np.ndarray, ref: Reference, g: Group) -> tuple[float, float, float, float]:
    j = g.columns[0]
    column, reference, spreads = window[:, j], ref.sorted_columns[j], ref.sorted_spreads[j]
    d, p = ks_test(column, reference)
    d_spread, p_spread = ks_test(np.abs(column - np.median(reference)), spreads)
    if p_spread < p:
        d, p = d_spread, p_spread
    return d, min(1.0, 2 * p), effect_size(column, reference), ref.numeric_bins[j].psi(column)


def _categorical(
    window_counts: np.ndarray, reference_counts: np.ndarray
) -> tuple[float, float, float, float]:
    stat, p = homogeneity(window_counts, reference_counts)
    chance = chance_divergence(window_counts, reference_counts)
    return (
        stat,
        p,
        js_effect(window_counts, reference_counts, chance),
        psi(window_counts, reference_counts),
    )


def _multivariate(window: np.ndarray, ref: Reference) -> tuple[float, float, float, float]:
    assert ref.pca is not None and ref.pca_errors is not None and ref.pca_bins is not None
    errors, reference = ref.pca.errors(window), ref.pca_errors
    if np.ptp(np.concatenate([errors, reference])) == 0:
        return 0.0, 1.0, 0.0, 0.0
    result = mannwhitneyu(errors, reference, alternative="greater")
    spread = float(np.std(reference)) or float(np.std(errors))
    increase = max(0.0, float(errors.mean() - reference.mean()))
    effect = min(increase / spread, MAX_EFFECT) if spread else 1.0 if increase else 0.0
    u = float(result.statistic) / (len(errors) * len(reference))  # P(window error > reference)
    return u, float(result.pvalue), effect, ref.pca_bins.psi(errors)


def data_drift(
    window: np.ndarray,
    ref: Reference,
    policy: DriftPolicy,
    predicted: np.ndarray | None = None,
    *,
    alpha: float | None = None,
) -> DataVerdict:
    """Test one window of feature vectors (and, when given, the class index predicted for each
    row, -1 for none) against the reference at FDR level `alpha` (default: the policy's)."""
    alpha = policy.alpha if alpha is None else alpha
    window = conform(np.asarray(window, dtype=np.float64), ref.precision)
    rows: list[tuple[str, Kind, tuple[float, float, float, float]]] = []
    for g in ref.groups:
        if g.kind == "numeric":
            rows.append((g.name, "numeric", _numeric(window, ref, g)))
        else:
            counts = np.bincount(codes(window, g), minlength=len(g.categories) + 1).astype(float)
            reference_counts = ref.category_counts[g.name]
            rows.append((g.name, "categorical", _categorical(counts, reference_counts)))
    if ref.prediction_counts is not None and predicted is not None:
        known = predicted[predicted >= 0]
        if known.size:
            counts = np.bincount(known, minlength=len(ref.classes)).astype(float)
            rows.append(
                (
                    PREDICTION,
                    "prediction",
                    _categorical(counts, ref.prediction_counts),
                )
            )
    if ref.pca is not None:
        rows.append((MULTIVARIATE, "multivariate", _multivariate(window, ref)))
    q_values = bh_adjusted([r[2][1] for r in rows])
    features = []
    for (name, kind, (stat, p, effect, index)), q in zip(rows, q_values, strict=True):
        gate = policy.min_distance if kind in ("categorical", "prediction") else policy.min_effect
        material = effect >= gate
        features.append(
            FeatureDrift(
                feature=name,
                kind=kind,
                statistic=stat,
                p_value=p,
                q_value=q,
                effect=effect,
                psi=index,
                material=material,
                drifted=material and q <= alpha,
            )
        )
    return DataVerdict(any(f.drifted for f in features), features, alpha)


# --- calibration ------------------------------------------------------------------------------


def window_rate(policy: DriftPolicy, window: int) -> float:
    """The chance a window of stationary data may drift if episodes (k drifted windows of n)
    are to stay within the policy's false alarms per million predictions."""
    windows_per_million = 1e6 / window
    allowed = policy.false_alarms_per_million / (
        windows_per_million * math.comb(policy.n, policy.k)
    )
    return min(0.5, allowed ** (1 / policy.k))


def detectable_shift(alpha: float, tests: int, window: int, reference_rows: int) -> float:
    """The smallest mean shift (in standard deviations of a normal feature) whose expected
    Kolmogorov-Smirnov statistic exceeds the critical value at `alpha / tests` by a quarter:
    roughly what a window of this size finds reliably."""
    level = max(alpha / max(tests, 1), 1e-300)
    critical = math.sqrt(-math.log(level / 2) / 2) * math.sqrt(1 / window + 1 / reference_rows)
    needed = min(1.25 * critical, 0.999999)
    return float(2 * norm.ppf((1 + needed) / 2))


AUTO_WINDOWS = (50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000)


def window_size(policy: DriftPolicy, tests: int, reference_rows: int) -> int:
    """The policy's window, or for `auto` the smallest that finds a `min_effect` shift."""
    if policy.window != "auto":
        return int(policy.window)
    for window in AUTO_WINDOWS:
        if detectable_shift(policy.alpha, tests, window, reference_rows) <= policy.min_effect:
            return window
    return AUTO_WINDOWS[-1]


@dataclass(frozen=True)
class Calibration:
    window: int
    alpha: float  # the FDR level live windows are tested at
    window_rate: float  # the budget's allowed chance that a stationary window drifts
    bootstrap_rate: float  # the share of bootstrap windows that drift at `alpha`
    draws: int
    detectable_shift: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "window": self.window,
            "alpha": self.alpha,
            "window_rate": self.window_rate,
            "bootstrap_rate": self.bootstrap_rate,
            "draws": self.draws,
            "detectable_shift": self.detectable_shift,
        }


def calibrate(
    ref: Reference, policy: DriftPolicy, *, draws: int = CALIBRATION_DRAWS, seed: int = 0
) -> Calibration:
    """Draw stationary windows and stationary references from the reference sample (bootstrap),
    test each pair, and lower `alpha` below the policy's until the share of windows that drift
    fits the false-alarm budget."""
    rng = np.random.default_rng(seed)
    window = window_size(policy, ref.tests(), ref.rows)
    rate = window_rate(policy, window)
    shares = (
        ref.prediction_counts / ref.prediction_counts.sum()
        if ref.prediction_counts is not None
        else None
    )
    scores = []
    for _ in range(draws):
        resampled = ref.sample[rng.integers(ref.rows, size=ref.rows)]
        boot = prepare(
            resampled,
            ref.names,
            dict(zip(ref.classes, shares, strict=True)) if shares is not None else None,
            pca=ref.pca,
            precision=ref.precision,
        )
        rows = ref.sample[rng.integers(ref.rows, size=window)]
        predicted = rng.choice(len(shares), size=window, p=shares) if shares is not None else None
        scores.append(data_drift(rows, boot, policy, predicted).score)
    ordered = np.sort(scores)
    # At most `allowed` of the draws may drift: alpha stays below the next one's score (a window
    # drifts at level alpha when its score is at most alpha). rate <= 0.5, so it exists.
    allowed = int(rate * draws)
    below_next = float(np.nextafter(ordered[allowed], 0))
    alpha = max(min(policy.alpha, below_next), 1e-300)
    return Calibration(
        window=window,
        alpha=alpha,
        window_rate=rate,
        bootstrap_rate=float(np.mean(ordered <= alpha)),
        draws=draws,
        detectable_shift=detectable_shift(alpha, ref.tests(), window, ref.rows),
    )


# --- performance and episodes -----------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceVerdict:
    drifted: bool
    accuracy: float
    p_value: float


LEGACY_HOLDOUT_ROWS = 200  # assumed for profiles that did not record their holdout's size


def performance_drift(
    correct: int,
    total: int,
    reference_accuracy: float,
    policy: DriftPolicy,
    holdout_rows: int | None = LEGACY_HOLDOUT_ROWS,
) -> PerformanceVerdict:
    """Only a significant and material *drop* is drift. The reference accuracy was measured on
    `holdout_rows` rows, so it is itself uncertain: the window is compared with the holdout by a
    one-sided Fisher exact test (a holdout of 22 rows all right does not make a live 95 % a
    drop). `None`: the reference accuracy is exact (one-sided binomial test)."""
    accuracy = correct / total
    if holdout_rows:
        right = round(reference_accuracy * holdout_rows)
        table = [[correct, total - correct], [right, holdout_rows - right]]
        p = float(fisher_exact(table, alternative="less").pvalue)
    else:
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


def episode_closes(recent: list[bool], policy: DriftPolicy) -> bool:
    """The last `recover` windows (newest last) were all clean."""
    return len(recent) >= policy.recover and not any(recent[-policy.recover :])
