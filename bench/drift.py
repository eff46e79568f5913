"""How well the monitor's detectors find drift, on streams whose drift points are known.

The monitor's detectors (the same functions the service runs: windows tested against a reference
sample at a calibrated FDR level with a minimum effect, predictions and labels included, episodes
opened by k of n drifted windows and closed after recovery) run beside two baselines on the same
streams:

- `ks_fixed`: a fixed-window two-sample Kolmogorov-Smirnov test per feature at 0.05 and a
  two-sided test on the error rate at 0.05, alarming on any window where one fires (what a naive
  monitor does);
- `ks_bonferroni`: the same with the 0.05 split across the tests;
- `dummy`: never alarms.

Streams (each repeated `--runs` times with fresh samples; the drift point is mid-window):
- `stationary`: 20 normal features, nothing changes, `--stationary` samples;
- `mean_shift`: one of 20 features shifts by 0.5 standard deviations;
- `variance`: one of 20 features' standard deviation grows by half;
- `categorical`: a categorical feature's shares change and an unseen value appears;
- `concept`: the features stay, labels change in a region (only labels show it);
- `correlation`: pairs of correlated features decorrelate (each feature alone is unchanged);
- `digits`: scikit-learn's bundled handwritten digits; after the drift point only digits 0-4
  arrive (64 pixel features, many of them constant).

Prints a table per detector and stream, then one JSON line: `stationary_samples`,
`stationary_false_alarms`, `mean_shift_delay_samples` and, per stream, `<stream>_delay_samples`
(mean samples from the drift point to the alarm, over the runs that found it) and
`<stream>_missed` (runs with no alarm within `--horizon` samples), with the baselines' figures
under `baselines`.

    uv run python bench/drift.py [--runs 20] [--stationary 1000000]
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
from scipy.stats import binomtest, ks_2samp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from conveyor_contracts.project import DriftPolicy
from conveyor_monitor.domain.detectors import (
    Reference,
    calibrate,
    data_drift,
    episode_closes,
    episode_opens,
    performance_drift,
    prepare,
)

POLICY = DriftPolicy()
REFERENCE_ROWS = 1000  # as many rows as a registered version's profile holds
CHUNK = 50_000


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
    sample: Callable[[np.random.Generator, int, bool], Batch]  # (rng, n, drifted)
    drift_at: int = 4_100


# --- streams ----------------------------------------------------------------------------------


def _labels(rng: np.random.Generator, x: np.ndarray, flip: np.ndarray | None = None) -> Batch:
    """A fixed linear model (x0 + x1 > 0) against labels with 10% noise (and `flip`ped rows)."""
    predicted = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth = predicted ^ (rng.random(len(x)) < 0.1)
    if flip is not None:
        truth = truth ^ flip
    return Batch(x, predicted, predicted == truth)


def normal_stream(name: str, change: Callable[[np.random.Generator, np.ndarray], None]) -> Stream:
    def sample(rng: np.random.Generator, n: int, drifted: bool) -> Batch:
        x = rng.normal(size=(n, 20))
        if drifted:
            change(rng, x)
        return _labels(rng, x)

    return Stream(name, [f"x{i}" for i in range(20)], ["no", "yes"], sample)


def _shift(rng: np.random.Generator, x: np.ndarray) -> None:
    x[:, 7] += 0.5


def _spread(rng: np.random.Generator, x: np.ndarray) -> None:
    x[:, 3] *= 1.5


CATEGORIES = ["a", "b", "c", "d", "e"]
SHARES = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
SHIFTED = np.array([0.2, 0.2, 0.2, 0.15, 0.15, 0.1])  # the last is a value never seen


def categorical_stream() -> Stream:
    def sample(rng: np.random.Generator, n: int, drifted: bool) -> Batch:
        numeric = rng.normal(size=(n, 10))
        shares = SHIFTED if drifted else np.append(SHARES, 0.0)
        value = rng.choice(len(shares), size=n, p=shares)
        onehot = np.zeros((n, len(CATEGORIES)))
        seen = value < len(CATEGORIES)
        onehot[np.nonzero(seen)[0], value[seen]] = 1.0
        return _labels(rng, np.hstack([numeric, onehot]))

    names = [f"x{i}" for i in range(10)] + [f"merchant={c}" for c in CATEGORIES]
    return Stream("categorical", names, ["no", "yes"], sample)


def concept_stream() -> Stream:
    def sample(rng: np.random.Generator, n: int, drifted: bool) -> Batch:
        x = rng.normal(size=(n, 10))
        return _labels(rng, x, (x[:, 2] > 1.28) if drifted else None)

    return Stream("concept", [f"x{i}" for i in range(10)], ["no", "yes"], sample)


def correlation_stream() -> Stream:
    def sample(rng: np.random.Generator, n: int, drifted: bool) -> Batch:
        x = rng.normal(size=(n, 8))
        rho = 0.0 if drifted else 0.9
        for j in range(0, 8, 2):
            x[:, j + 1] = rho * x[:, j] + math.sqrt(1 - rho**2) * x[:, j + 1]
        return _labels(rng, x)

    return Stream("correlation", [f"x{i}" for i in range(8)], ["no", "yes"], sample)


def digits_stream() -> Stream:
    digits = load_digits()
    split = np.random.default_rng(0).permutation(len(digits.target))
    train, pool = split[: len(split) // 2], split[len(split) // 2 :]
    model = LogisticRegression(max_iter=5000).fit(digits.data[train], digits.target[train])
    x_pool, y_pool = digits.data[pool], digits.target[pool]
    right = model.predict(x_pool) == y_pool
    predicted = model.predict(x_pool)
    low = np.nonzero(y_pool <= 4)[0]

    def sample(rng: np.random.Generator, n: int, drifted: bool) -> Batch:
        idx = rng.choice(low, size=n) if drifted else rng.integers(len(pool), size=n)
        return Batch(x_pool[idx].astype(np.float64), predicted[idx], right[idx])

    return Stream("digits", [f"pixel{i}" for i in range(64)], [str(d) for d in range(10)], sample)


def streams() -> list[Stream]:
    return [
        normal_stream("mean_shift", _shift),
        normal_stream("variance", _spread),
        categorical_stream(),
        concept_stream(),
        correlation_stream(),
        digits_stream(),
    ]


# --- detectors --------------------------------------------------------------------------------


class Detector:
    """Fed whole windows; returns True when an alarm (an episode) starts with this window."""

    name: str

    def window(self, batch: Batch) -> bool:
        raise NotImplementedError


@dataclass
class Conveyor(Detector):
    reference: Reference
    reference_accuracy: float
    alpha: float
    name: str = "conveyor"
    recent: dict[str, list[bool]] = field(default_factory=lambda: {"data": [], "perf": []})
    open: set[str] = field(default_factory=set)  # the kinds that opened the episode
    since_open: dict[str, list[bool]] = field(default_factory=dict)

    def window(self, batch: Batch) -> bool:
        """The service's episode rules: k of the last n windows of a kind open an episode,
        `recover` clean windows of each kind that opened it close it."""
        data = data_drift(batch.x, self.reference, POLICY, batch.predicted, alpha=self.alpha)
        perf = performance_drift(
            int(batch.correct.sum()), len(batch.correct), self.reference_accuracy, POLICY
        )
        verdicts = {"data": data.drifted, "perf": perf.drifted}
        if self.open:
            for kind in self.open:
                self.since_open[kind].append(verdicts[kind])
            if all(episode_closes(self.since_open[k], POLICY) for k in self.open):
                self.open, self.recent = set(), {"data": [], "perf": []}
            return False
        for kind, drifted in verdicts.items():
            self.recent[kind].append(drifted)
        self.open = {k for k, r in self.recent.items() if episode_opens(r, POLICY)}
        self.since_open = {k: [] for k in self.open}
        return bool(self.open)


@dataclass
class FixedKS(Detector):
    reference: np.ndarray
    reference_accuracy: float
    level: float
    name: str

    def window(self, batch: Batch) -> bool:
        """Every window where a test fires is an alert."""
        p = [ks_2samp(batch.x[:, j], self.reference[:, j]).pvalue for j in range(batch.x.shape[1])]
        p.append(
            binomtest(int(batch.correct.sum()), len(batch.correct), self.reference_accuracy).pvalue
        )
        return bool(min(p) < self.level)


class Dummy(Detector):
    name = "dummy"

    def window(self, batch: Batch) -> bool:
        return False


def detectors(stream: Stream, rng: np.random.Generator) -> list[Detector]:
    """Fresh detectors for one run against a reference drawn before the drift (the caller sets
    Conveyor's calibrated alpha, so that each stream is calibrated once)."""
    ref_batch = stream.sample(rng, REFERENCE_ROWS, False)
    holdout = stream.sample(rng, 2000, False)
    shares = np.bincount(holdout.predicted, minlength=len(stream.classes)) / len(holdout.predicted)
    reference = prepare(
        ref_batch.x, stream.names, dict(zip(stream.classes, shares.tolist(), strict=True))
    )
    accuracy = float(holdout.correct.mean())
    tests = reference.tests() + 1  # the KS baselines also test the error rate
    return [
        Conveyor(reference, accuracy, alpha=0.0),
        FixedKS(ref_batch.x, accuracy, 0.05, "ks_fixed"),
        FixedKS(ref_batch.x, accuracy, 0.05 / tests, "ks_bonferroni"),
        Dummy(),
    ]


def windows(
    stream: Stream, rng: np.random.Generator, total: int, drift_at: int
) -> Iterator[tuple[int, Batch]]:
    """Consecutive windows of the stream as (index of the window's last sample + 1, window)."""
    size = int(POLICY.window)
    total -= total % size
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        n -= n % size
        before = max(0, min(n, drift_at - done))
        parts = [stream.sample(rng, before, False)] if before else []
        if n - before:
            parts.append(stream.sample(rng, n - before, True))
        batch = Batch(
            np.vstack([p.x for p in parts]),
            np.concatenate([p.predicted for p in parts]),
            np.concatenate([p.correct for p in parts]),
        )
        for start in range(0, n, size):
            end = start + size
            yield (
                done + end,
                Batch(batch.x[start:end], batch.predicted[start:end], batch.correct[start:end]),
            )
        done += n


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    false_alarms: int = 0
    delays: list[int] = field(default_factory=list)
    missed: int = 0


def run_stream(
    stream: Stream, runs: int, horizon: int, seed: int
) -> tuple[dict[str, Outcome], float]:
    outcomes: dict[str, Outcome] = {}
    alpha = 0.0
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        found = detectors(stream, rng)
        conveyor = found[0]
        assert isinstance(conveyor, Conveyor)
        if r == 0:
            alpha = calibrate(conveyor.reference, POLICY, seed=seed).alpha
            outcomes = {d.name: Outcome() for d in found}
        conveyor.alpha = alpha
        first: dict[str, int | None] = {d.name: None for d in found}
        for end, batch in windows(stream, rng, stream.drift_at + horizon, stream.drift_at):
            for d in found:
                if d.window(batch):
                    if end <= stream.drift_at:
                        outcomes[d.name].false_alarms += 1
                    elif first[d.name] is None:
                        first[d.name] = end - stream.drift_at
        for d in found:
            o = outcomes[d.name]
            delay = first[d.name]
            if delay is None:
                o.missed += 1
            else:
                o.delays.append(delay)
    return outcomes, alpha


def run_stationary(samples: int, seed: int) -> tuple[dict[str, Outcome], float]:
    stream = normal_stream("stationary", _shift)
    rng = np.random.default_rng([seed, 999])
    found = detectors(stream, rng)
    conveyor = found[0]
    assert isinstance(conveyor, Conveyor)
    conveyor.alpha = calibrate(conveyor.reference, POLICY, seed=seed).alpha
    outcomes = {d.name: Outcome() for d in found}
    for _, batch in windows(stream, rng, samples, samples):
        for d in found:
            if d.window(batch):
                outcomes[d.name].false_alarms += 1
    return outcomes, conveyor.alpha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per stream")
    parser.add_argument("--stationary", type=int, default=1_000_000, help="stationary samples")
    parser.add_argument("--horizon", type=int, default=10_000, help="samples after the drift")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    print(
        f"policy: window {POLICY.window}, alpha <= {POLICY.alpha}, "
        f"{POLICY.false_alarms_per_million:g} false alarm(s) per million budget, "
        f"min effect {POLICY.min_effect} std / {POLICY.min_distance} JS, "
        f"{POLICY.k} of {POLICY.n} windows"
    )
    stationary, alpha = run_stationary(args.stationary, args.seed)
    print(f"\nstationary: {args.stationary:,} samples (calibrated alpha {alpha:.2g})")
    print(f"  {'detector':<15}{'false alarms':>14}{'per million':>14}")
    for name, o in stationary.items():
        per_million = o.false_alarms / args.stationary * 1e6
        print(f"  {name:<15}{o.false_alarms:>14,}{per_million:>14.1f}")

    results: dict[str, dict[str, Outcome]] = {}
    print(f"\nstreams: {args.runs} runs each, drift mid-window, {args.horizon:,} samples after")
    print(
        f"  {'stream':<13}{'detector':<15}{'found':>7}{'mean delay':>12}{'max delay':>11}"
        f"{'false alarms':>14}"
    )
    for stream in streams():
        outcomes, alpha = run_stream(stream, args.runs, args.horizon, args.seed)
        results[stream.name] = outcomes
        for name, o in outcomes.items():
            mean = f"{np.mean(o.delays):,.0f}" if o.delays else "-"
            worst = f"{max(o.delays):,}" if o.delays else "-"
            print(
                f"  {stream.name:<13}{name:<15}{len(o.delays):>4}/{args.runs:<2}{mean:>12}"
                f"{worst:>11}{o.false_alarms:>14}"
            )

    def figures(name: str) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {
            "stationary_false_alarms": stationary[name].false_alarms
        }
        for stream, outcomes in results.items():
            o = outcomes[name]
            out[f"{stream}_delay_samples"] = round(float(np.mean(o.delays))) if o.delays else None
            out[f"{stream}_missed"] = o.missed
            out[f"{stream}_false_alarms"] = o.false_alarms
        return out

    line: dict[str, object] = {"stationary_samples": args.stationary} | figures("conveyor")
    line["baselines"] = {name: figures(name) for name in ("ks_fixed", "ks_bonferroni", "dummy")}
    print(f"\n({time.perf_counter() - started:.0f} s)")
    print(json.dumps(line))


if __name__ == "__main__":
    sys.exit(main())
