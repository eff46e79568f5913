"""How soon the monitor finds drift, and how often it alarms on data that did not drift, beside
established detectors, on streams whose drift points are known.

Conveyor is the monitor's own code with its default policy: windows of 200 tested against the
reference (k of n drifted windows open an episode) *and* the sequential detectors (evidence
accumulated over steps of 50 observations and over single labels, thresholds calibrated by
bootstrap to the budget), episodes held open until both paths are clean again. Its peers:

- `adwin`: river's ADWIN (Bifet & Gavaldà 2007) on every numeric feature and on the indicator of
  each of a categorical's ten commonest values, at river's default delta (0.002), and on the error
  stream; an alarm of any of them is an alarm;
- `adwin_bonferroni`: the same with delta split across the data streams (the error stream keeps
  0.002);
- `adwin_errors`: ADWIN on the error stream alone (what concept drift is judged against);
- `ks_fixed` / `ks_bonferroni`: a fixed-window two-sample Kolmogorov-Smirnov test per column and
  a binomial test of the window's error rate at 0.05 (split across the tests);
- `dummy`: never alarms.

Streams (`--runs` seeds each, drift 4,100 samples in, `--horizon` samples after):
- `mean_shift`: one of 20 normal features shifts by 0.5 standard deviations (abrupt);
- `gradual`: one of 20 features' mean rises linearly by 1 standard deviation over 5,000 samples;
- `small`: one of 20 features shifts by 0.15 standard deviations;
- `prior`: the positive class goes from 50 % to 65 % of the traffic; 4 of 20 features carry the
  class (each moves by 0.15 std), the predicted classes follow;
- `variance`: one of 20 features' standard deviation grows by half;
- `categorical`: a categorical feature's shares change and an unseen value appears;
- `concept`: the features stay, labels change in a region (only labels show it);
- `correlation`: pairs of correlated features decorrelate (each feature alone is unchanged);
- `digits`: scikit-learn's bundled handwritten digits; after the drift point only digits 0-4;
- `stationary`: `--stationary` samples of nothing changing, with heavy-tailed (Student t, 2
  degrees of freedom; log-normal), discrete (Poisson counts and their log1p; a rare binary),
  bimodal and normal features and a categorical of 200 values (Zipf shares), labeled.

Delays are in samples from the drift point to the alarm (median over the runs that found it);
`label_delay_samples` is the label side's (performance episodes, ADWIN on errors). False alarms
are alarms before the drift point (and on the stationary stream), per million samples.

Prints a table, then one JSON line: `stationary_samples`, `stationary_false_alarms`,
`mean_shift_delay_samples` and, per stream, `<stream>_delay_samples`, `<stream>_missed`,
`<stream>_false_alarms` (Conveyor), the peers' under `baselines`, and under `streams` every
detector's `delay_samples`, `missed`, `false_alarms_per_million` and `label_delay_samples`.

    uv run python bench/drift.py [--runs 10] [--stationary 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from river.drift import ADWIN
from scipy.stats import binomtest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from conveyor_contracts.project import DriftPolicy
from conveyor_monitor.domain.detectors import (
    Reference,
    calibrate,
    data_drift,
    episode_closes,
    episode_opens,
    ks_test,
    performance_drift,
    prepare,
)
from conveyor_monitor.domain.sequential import (
    DataSequence,
    ErrorSequence,
    data_sequence,
    label_threshold,
)

POLICY = DriftPolicy()
REFERENCE_ROWS = 1000  # as many rows as a registered version's profile holds
HOLDOUT_ROWS = 2000
CHUNK = 50_000
DRIFT_AT = 4_100
ADWIN_DELTA = 0.002  # river's default
ADWIN_LEVELS = 10  # a categorical's commonest values each get an ADWIN


@dataclass
class Batch:
    """A run of samples: features, predicted class index, whether the prediction was right."""

    x: np.ndarray
    predicted: np.ndarray
    correct: np.ndarray


@dataclass
class Stream:
    name: str
    names: list[str]
    classes: list[str]
    # (rng, n, position of the first sample in the stream, drift point) -> samples
    sample: Callable[[np.random.Generator, int, int, int], Batch]
    drift_at: int = DRIFT_AT


def switched(
    before: Callable[[np.random.Generator, int], Batch],
    after: Callable[[np.random.Generator, int], Batch],
) -> Callable[[np.random.Generator, int, int, int], Batch]:
    """A stream that is `before` until the drift point and `after` from it."""

    def sample(rng: np.random.Generator, n: int, at: int, drift_at: int) -> Batch:
        cut = max(0, min(n, drift_at - at))
        parts = [
            p
            for p in (before(rng, cut) if cut else None, after(rng, n - cut) if n - cut else None)
            if p
        ]
        return Batch(
            np.vstack([p.x for p in parts]),
            np.concatenate([p.predicted for p in parts]),
            np.concatenate([p.correct for p in parts]),
        )

    return sample


# --- streams ----------------------------------------------------------------------------------


def _labels(rng: np.random.Generator, x: np.ndarray, flip: np.ndarray | None = None) -> Batch:
    """A fixed linear model (x0 + x1 > 0) against labels with 10% noise (and `flip`ped rows)."""
    predicted = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth = predicted ^ (rng.random(len(x)) < 0.1)
    if flip is not None:
        truth = truth ^ flip
    return Batch(x, predicted, predicted == truth)


def normal_stream(name: str, change: Callable[[np.ndarray], None] | None) -> Stream:
    def plain(rng: np.random.Generator, n: int) -> Batch:
        return _labels(rng, rng.normal(size=(n, 20)))

    def changed(rng: np.random.Generator, n: int) -> Batch:
        x = rng.normal(size=(n, 20))
        if change is not None:
            change(x)
        return _labels(rng, x)

    return Stream(name, [f"x{i}" for i in range(20)], ["no", "yes"], switched(plain, changed))


def _shift(by: float) -> Callable[[np.ndarray], None]:
    def change(x: np.ndarray) -> None:
        x[:, 7] += by

    return change


def _spread(x: np.ndarray) -> None:
    x[:, 3] *= 1.5


GRADUAL_SPAN = 5_000


def gradual_stream() -> Stream:
    """x7's mean rises from the drift point by 1 std over GRADUAL_SPAN samples, then stays."""

    def sample(rng: np.random.Generator, n: int, at: int, drift_at: int) -> Batch:
        x = rng.normal(size=(n, 20))
        position = at + np.arange(n)
        x[:, 7] += np.clip((position - drift_at + 1) / GRADUAL_SPAN, 0.0, 1.0)
        return _labels(rng, x)

    return Stream("gradual", [f"x{i}" for i in range(20)], ["no", "yes"], sample)


def prior_stream() -> Stream:
    """The positive class's share goes from 50 % to 65 %; features 0-3 sit 0.5 std above or
    below zero by class (a 0.15 std move each), the model predicts from them."""

    def rows(positive: float) -> Callable[[np.random.Generator, int], Batch]:
        def sample(rng: np.random.Generator, n: int) -> Batch:
            y = (rng.random(n) < positive).astype(int)
            x = rng.normal(size=(n, 20))
            x[:, :4] += (y[:, None] - 0.5) * 1.0
            predicted = (x[:, :4].sum(axis=1) > 0).astype(int)
            return Batch(x, predicted, predicted == y)

        return sample

    return Stream(
        "prior", [f"x{i}" for i in range(20)], ["no", "yes"], switched(rows(0.5), rows(0.65))
    )


CATEGORIES = ["a", "b", "c", "d", "e"]
SHARES = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
SHIFTED = np.array([0.2, 0.2, 0.2, 0.15, 0.15, 0.1])  # the last is a value never seen


def categorical_stream() -> Stream:
    def rows(shares: np.ndarray) -> Callable[[np.random.Generator, int], Batch]:
        def sample(rng: np.random.Generator, n: int) -> Batch:
            numeric = rng.normal(size=(n, 10))
            value = rng.choice(len(shares), size=n, p=shares)
            onehot = np.zeros((n, len(CATEGORIES)))
            seen = value < len(CATEGORIES)
            onehot[np.nonzero(seen)[0], value[seen]] = 1.0
            return _labels(rng, np.hstack([numeric, onehot]))

        return sample

    names = [f"x{i}" for i in range(10)] + [f"merchant={c}" for c in CATEGORIES]
    sample = switched(rows(np.append(SHARES, 0.0)), rows(SHIFTED))
    return Stream("categorical", names, ["no", "yes"], sample)


def concept_stream() -> Stream:
    def rows(drifted: bool) -> Callable[[np.random.Generator, int], Batch]:
        def sample(rng: np.random.Generator, n: int) -> Batch:
            x = rng.normal(size=(n, 10))
            return _labels(rng, x, (x[:, 2] > 1.28) if drifted else None)

        return sample

    return Stream(
        "concept", [f"x{i}" for i in range(10)], ["no", "yes"], switched(rows(False), rows(True))
    )


def correlation_stream() -> Stream:
    def rows(rho: float) -> Callable[[np.random.Generator, int], Batch]:
        def sample(rng: np.random.Generator, n: int) -> Batch:
            x = rng.normal(size=(n, 8))
            for j in range(0, 8, 2):
                x[:, j + 1] = rho * x[:, j] + math.sqrt(1 - rho**2) * x[:, j + 1]
            return _labels(rng, x)

        return sample

    return Stream(
        "correlation", [f"x{i}" for i in range(8)], ["no", "yes"], switched(rows(0.9), rows(0.0))
    )


def digits_stream() -> Stream:
    digits = load_digits()
    split = np.random.default_rng(0).permutation(len(digits.target))
    train, pool = split[: len(split) // 2], split[len(split) // 2 :]
    model = LogisticRegression(max_iter=5000).fit(digits.data[train], digits.target[train])
    x_pool, y_pool = digits.data[pool], digits.target[pool]
    predicted = model.predict(x_pool)
    right = predicted == y_pool
    low = np.nonzero(y_pool <= 4)[0]

    def rows(drifted: bool) -> Callable[[np.random.Generator, int], Batch]:
        def sample(rng: np.random.Generator, n: int) -> Batch:
            idx = rng.choice(low, size=n) if drifted else rng.integers(len(pool), size=n)
            return Batch(x_pool[idx].astype(np.float64), predicted[idx], right[idx])

        return sample

    names = [f"pixel{i}" for i in range(64)]
    sample = switched(rows(False), rows(True))
    return Stream("digits", names, [str(d) for d in range(10)], sample)


LEVELS = 200
ZIPF = 1.0 / np.arange(1, LEVELS + 1)
ZIPF /= ZIPF.sum()


def stationary_stream() -> Stream:
    """Nothing changes; features of the shapes live traffic has."""
    names = [
        "normal",
        "normal2",
        "student_t2",
        "lognormal",
        "count",
        "log1p_count",
        "rare_flag",
        "bimodal",
        "bimodal2",
        "amount",
    ] + [f"merchant=m{i}" for i in range(LEVELS)]

    def sample(rng: np.random.Generator, n: int, at: int, drift_at: int) -> Batch:
        x = np.zeros((n, len(names)))
        x[:, 0] = rng.normal(size=n)
        x[:, 1] = rng.normal(size=n)
        x[:, 2] = rng.standard_t(2, size=n)
        x[:, 3] = rng.lognormal(0.0, 1.0, size=n)
        x[:, 4] = rng.poisson(2.0, size=n)
        x[:, 5] = np.log1p(rng.poisson(3.0, size=n))
        x[:, 6] = rng.random(n) < 0.03
        mode = rng.random(n) < 0.3
        x[:, 7] = np.where(mode, rng.normal(-2.0, 0.5, size=n), rng.normal(1.0, 0.7, size=n))
        x[:, 8] = np.where(rng.random(n) < 0.5, rng.normal(-3, 1, size=n), rng.normal(3, 1, size=n))
        x[:, 9] = np.round(rng.gamma(2.0, 40.0, size=n), 2)
        x[np.arange(n), 10 + rng.choice(LEVELS, size=n, p=ZIPF)] = 1.0
        predicted = (x[:, 0] + x[:, 7] > 0).astype(int)
        truth = predicted ^ (rng.random(n) < 0.1)
        return Batch(x, predicted, predicted == truth)

    return Stream("stationary", names, ["no", "yes"], sample, drift_at=1 << 62)


def streams() -> list[Stream]:
    return [
        normal_stream("mean_shift", _shift(0.5)),
        gradual_stream(),
        normal_stream("small", _shift(0.15)),
        prior_stream(),
        normal_stream("variance", _spread),
        categorical_stream(),
        concept_stream(),
        correlation_stream(),
        digits_stream(),
    ]


# --- detectors --------------------------------------------------------------------------------


@dataclass
class Alarm:
    at: int  # samples into the batch (1 = its first sample)
    side: str  # "data" or "label"


class Detector:
    """Fed consecutive batches of POLICY.window samples; returns the alarms each raised."""

    name: str

    def batch(self, batch: Batch) -> list[Alarm]:
        raise NotImplementedError


@dataclass
class Side:
    """One kind's episodes as the service keeps them: opened by k of the last n drifted windows
    or by the sequential detector, closed after `recover` clean windows with the sequential
    evidence at rest for as long."""

    recent: list[bool] = field(default_factory=list)
    open: bool = False
    clean: int = 0  # windows in a row clean by the window rule since the episode opened


@dataclass
class Conveyor(Detector):
    reference: Reference
    reference_accuracy: float
    alpha: float
    data: DataSequence
    labels: ErrorSequence
    name: str = "conveyor"
    sides: dict[str, Side] = field(default_factory=lambda: {"data": Side(), "label": Side()})

    def _open(self, side: str) -> None:
        self.sides[side] = Side(open=True)
        (self.data if side == "data" else self.labels).hold()

    def _window_rule(self, side: str, drifted: bool, at: int, alarms: list[Alarm]) -> None:
        s = self.sides[side]
        if s.open:
            s.clean = 0 if drifted else s.clean + 1
            span = POLICY.recover * int(POLICY.window)
            sequence = self.data if side == "data" else self.labels
            if episode_closes([False] * s.clean, POLICY) and sequence.rested >= span:
                self.sides[side] = Side()
                (self.data if side == "data" else self.labels).release()
            return
        s.recent.append(drifted)
        if POLICY.window_rule and episode_opens(s.recent, POLICY):
            self._open(side)
            alarms.append(Alarm(at, side))

    def batch(self, batch: Batch) -> list[Alarm]:
        alarms: list[Alarm] = []
        step = self.data.step_rows
        for start in range(0, len(batch.x), step):
            evidence = self.data.observe(
                batch.x[start : start + step], batch.predicted[start : start + step]
            )
            self._sequential("data", evidence.alarm, start + step, alarms)
        for i, right in enumerate(batch.correct):
            evidence = self.labels.observe(not right)
            self._sequential("label", evidence.alarm, i + 1, alarms)
        data = data_drift(batch.x, self.reference, POLICY, batch.predicted, alpha=self.alpha)
        perf = performance_drift(
            int(batch.correct.sum()),
            len(batch.correct),
            self.reference_accuracy,
            POLICY,
            HOLDOUT_ROWS,
        )
        self._window_rule("data", data.drifted, len(batch.x), alarms)
        self._window_rule("label", perf.drifted, len(batch.x), alarms)
        return alarms

    def _sequential(self, side: str, alarm: bool, at: int, alarms: list[Alarm]) -> None:
        if alarm and not self.sides[side].open and POLICY.sequential:
            self._open(side)
            alarms.append(Alarm(at, side))


@dataclass
class Adwins(Detector):
    """river's ADWIN on each data stream (numeric features, indicators of a categorical's
    commonest values) and on the error stream."""

    columns: list[int]
    data_delta: float
    errors: bool
    name: str
    detectors: list[ADWIN] = field(default_factory=list)
    error_detector: ADWIN | None = None

    def __post_init__(self) -> None:
        self.detectors = [ADWIN(delta=self.data_delta) for _ in self.columns]
        self.error_detector = ADWIN(delta=ADWIN_DELTA) if self.errors else None

    def batch(self, batch: Batch) -> list[Alarm]:
        alarms: list[Alarm] = []
        x = batch.x[:, self.columns].tolist()
        wrong = (~batch.correct).astype(float).tolist()
        for i in range(len(wrong)):
            row = x[i]
            for j, d in enumerate(self.detectors):
                d.update(row[j])
                if d.drift_detected:
                    alarms.append(Alarm(i + 1, "data"))
            if self.error_detector is not None:
                self.error_detector.update(wrong[i])
                if self.error_detector.drift_detected:
                    alarms.append(Alarm(i + 1, "label"))
        return alarms


def adwin_columns(stream: Stream, sample: np.ndarray) -> list[int]:
    """Numeric columns, and the one-hot columns of each categorical's ADWIN_LEVELS commonest
    values (an indicator per value: ADWIN watches a mean)."""
    out: list[int] = []
    one_hot: dict[str, list[int]] = {}
    for j, name in enumerate(stream.names):
        base, sep, _ = name.partition("=")
        if sep:
            one_hot.setdefault(base, []).append(j)
        else:
            out.append(j)
    for cols in one_hot.values():
        commonest = sorted(cols, key=lambda j: -sample[:, j].sum())[:ADWIN_LEVELS]
        out.extend(sorted(commonest))
    return out


@dataclass
class FixedKS(Detector):
    reference: np.ndarray  # columns sorted
    reference_accuracy: float
    level: float
    name: str

    def batch(self, batch: Batch) -> list[Alarm]:
        """Every window where a test fires is an alert."""
        p = [ks_test(batch.x[:, j], self.reference[:, j])[1] for j in range(batch.x.shape[1])]
        p.append(
            binomtest(int(batch.correct.sum()), len(batch.correct), self.reference_accuracy).pvalue
        )
        return [Alarm(len(batch.x), "data")] if min(p) < self.level else []


class Dummy(Detector):
    name = "dummy"

    def batch(self, batch: Batch) -> list[Alarm]:
        return []


@dataclass
class Prepared:
    """What calibration makes once per stream: Conveyor's level, its sequential detector (the
    threshold), the label side's threshold."""

    alpha: float
    data_threshold: float
    label_threshold: float


def budget(policy: DriftPolicy) -> float:
    """Each path's share of the data budget (the service splits it the same way)."""
    return policy.false_alarms_per_million / (2 if policy.window_rule and policy.sequential else 1)


def prepare_once(stream: Stream, rng: np.random.Generator, seed: int) -> Prepared:
    ref_batch = stream.sample(rng, REFERENCE_ROWS, 0, stream.drift_at)
    holdout = stream.sample(rng, HOLDOUT_ROWS, 0, stream.drift_at)
    reference = reference_of(stream, ref_batch, holdout)
    policy = POLICY.model_copy(update={"false_alarms_per_million": budget(POLICY)})
    alpha = calibrate(reference, policy, seed=seed).alpha
    _, calibration = data_sequence(
        reference, step=POLICY.step, false_alarms_per_million=budget(POLICY), seed=seed
    )
    labels = label_threshold(
        float(holdout.correct.mean()), HOLDOUT_ROWS, POLICY.label_false_alarms_per_million / 2
    )
    return Prepared(alpha, calibration.threshold, labels.threshold)


def reference_of(stream: Stream, ref_batch: Batch, holdout: Batch) -> Reference:
    shares = np.bincount(holdout.predicted, minlength=len(stream.classes)) / len(holdout.predicted)
    return prepare(
        ref_batch.x, stream.names, dict(zip(stream.classes, shares.tolist(), strict=True))
    )


def detectors(stream: Stream, rng: np.random.Generator, prepared: Prepared) -> list[Detector]:
    """Fresh detectors for one run against a reference drawn before the drift."""
    ref_batch = stream.sample(rng, REFERENCE_ROWS, 0, stream.drift_at)
    holdout = stream.sample(rng, HOLDOUT_ROWS, 0, stream.drift_at)
    reference = reference_of(stream, ref_batch, holdout)
    accuracy = float(holdout.correct.mean())
    sequence, _ = data_sequence(
        reference,
        step=POLICY.step,
        false_alarms_per_million=budget(POLICY),
        threshold=prepared.data_threshold,
    )
    recovery = POLICY.recover * int(POLICY.window)
    sequence.recovery_steps = recovery // POLICY.step
    errors = ErrorSequence(
        errors=(1 - accuracy) * HOLDOUT_ROWS,
        n=HOLDOUT_ROWS,
        threshold=prepared.label_threshold,
        recovery_labels=recovery,
    )
    columns = adwin_columns(stream, ref_batch.x)
    tests = len(columns) + 1
    ks_tests = ref_batch.x.shape[1] + 1
    sorted_reference = np.sort(ref_batch.x, axis=0)
    return [
        Conveyor(reference, accuracy, prepared.alpha, sequence, errors),
        Adwins(columns, ADWIN_DELTA, True, "adwin"),
        Adwins(columns, ADWIN_DELTA / (tests - 1), True, "adwin_bonferroni"),
        Adwins([], ADWIN_DELTA, True, "adwin_errors"),
        FixedKS(sorted_reference, accuracy, 0.05, "ks_fixed"),
        FixedKS(sorted_reference, accuracy, 0.05 / ks_tests, "ks_bonferroni"),
        Dummy(),
    ]


def batches(stream: Stream, rng: np.random.Generator, total: int) -> Iterator[tuple[int, Batch]]:
    """Consecutive windows of the stream as (index of the window's first sample, window)."""
    size = int(POLICY.window)
    total -= total % size
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        n -= n % size
        chunk = stream.sample(rng, n, done, stream.drift_at)
        for start in range(0, n, size):
            end = start + size
            yield (
                done + start,
                Batch(chunk.x[start:end], chunk.predicted[start:end], chunk.correct[start:end]),
            )
        done += n


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    false_alarms: int = 0
    samples_before: int = 0  # samples of no drift watched
    delays: list[int] = field(default_factory=list)
    label_delays: list[int] = field(default_factory=list)
    missed: int = 0
    label_missed: int = 0

    def per_million(self) -> float | None:
        return self.false_alarms / self.samples_before * 1e6 if self.samples_before else None


def median(values: list[int]) -> int | None:
    return round(float(np.median(values))) if values else None


def run(stream: Stream, runs: int, total: int, seed: int) -> tuple[dict[str, Outcome], Prepared]:
    prepared = prepare_once(stream, np.random.default_rng([seed, 10_000]), seed)
    outcomes: dict[str, Outcome] = {}
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        found = detectors(stream, rng, prepared)
        outcomes = outcomes or {d.name: Outcome() for d in found}
        first: dict[str, dict[str, int]] = {d.name: {} for d in found}
        for start, batch in batches(stream, rng, total):
            for d in found:
                for alarm in d.batch(batch):
                    at = start + alarm.at  # samples seen when it alarmed
                    if at <= stream.drift_at:
                        outcomes[d.name].false_alarms += 1
                    else:
                        first[d.name].setdefault(alarm.side, at - stream.drift_at)
                        first[d.name].setdefault("any", at - stream.drift_at)
        for d in found:
            o = outcomes[d.name]
            o.samples_before += min(stream.drift_at, total - total % int(POLICY.window))
            if stream.drift_at < total:
                if "any" in first[d.name]:
                    o.delays.append(first[d.name]["any"])
                else:
                    o.missed += 1
                if "label" in first[d.name]:
                    o.label_delays.append(first[d.name]["label"])
                else:
                    o.label_missed += 1
    return outcomes, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per stream")
    parser.add_argument("--stationary", type=int, default=1_000_000, help="stationary samples")
    parser.add_argument("--horizon", type=int, default=10_000, help="samples after the drift")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="*", help="streams to run (all by default)")
    args = parser.parse_args()

    started = time.perf_counter()
    print(
        f"policy: window {POLICY.window} ({POLICY.k} of {POLICY.n}, alpha <= {POLICY.alpha}, "
        f"min effect {POLICY.min_effect} std / {POLICY.min_distance} JS), sequential steps of "
        f"{POLICY.step}; budgets {POLICY.false_alarms_per_million:g} per million predictions, "
        f"{POLICY.label_false_alarms_per_million:g} per million labels"
    )
    results: dict[str, dict[str, Outcome]] = {}
    stationary, prepared = run(stationary_stream(), 1, args.stationary, args.seed)
    results["stationary"] = stationary
    print(
        f"\nstationary: {args.stationary:,} samples (alpha {prepared.alpha:.2g}, sequential "
        f"thresholds {prepared.data_threshold:.1f} data, {prepared.label_threshold:.1f} labels)"
    )
    print(f"  {'detector':<18}{'false alarms':>14}{'per million':>14}")
    for name, o in stationary.items():
        print(f"  {name:<18}{o.false_alarms:>14,}{o.per_million() or 0:>14.1f}")

    print(
        f"\nstreams: {args.runs} runs each, drift {DRIFT_AT:,} samples in, {args.horizon:,} after"
    )
    print(
        f"  {'stream':<13}{'detector':<18}{'found':>7}{'median':>8}{'max':>8}{'labels':>8}"
        f"{'false/M':>9}"
    )
    for stream in streams():
        if args.only and stream.name not in args.only:
            continue
        outcomes, _ = run(stream, args.runs, DRIFT_AT + args.horizon, args.seed)
        results[stream.name] = outcomes
        for name, o in outcomes.items():
            med = f"{median(o.delays):,}" if o.delays else "-"
            worst = f"{max(o.delays):,}" if o.delays else "-"
            labels = f"{median(o.label_delays):,}" if o.label_delays else "-"
            print(
                f"  {stream.name:<13}{name:<18}{len(o.delays):>4}/{args.runs:<3}{med:>8}"
                f"{worst:>8}{labels:>8}{o.per_million() or 0:>9.0f}"
            )

    def figures(name: str) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {
            "stationary_false_alarms": stationary[name].false_alarms
        }
        for stream, outcomes in results.items():
            if stream == "stationary":
                continue
            o = outcomes[name]
            out[f"{stream}_delay_samples"] = median(o.delays)
            out[f"{stream}_missed"] = o.missed
            out[f"{stream}_false_alarms"] = o.false_alarms
        return out

    line: dict[str, object] = {"stationary_samples": args.stationary} | figures("conveyor")
    line["baselines"] = {name: figures(name) for name in stationary if name != "conveyor"}
    line["streams"] = {
        stream: {
            name: {
                "delay_samples": median(o.delays),
                "missed": o.missed,
                "false_alarms_per_million": o.per_million(),
                "label_delay_samples": median(o.label_delays),
                "label_missed": o.label_missed,
            }
            for name, o in outcomes.items()
        }
        for stream, outcomes in results.items()
    }
    print(f"\n({time.perf_counter() - started:.0f} s)")
    print(json.dumps(line))


if __name__ == "__main__":
    # The detectors multiply small matrices (a step of 50 rows): BLAS threads only contend for
    # the cores, several times slower on a busy machine.
    with threadpool_limits(1):
        sys.exit(main())
