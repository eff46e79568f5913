"""Sequential drift detection: evidence that accumulates across steps, free of I/O.

Windows tested one at a time forget what the last window showed: a shift too small for one
window is never found, however long it lasts. Here every test is a *channel* that turns each step
(a block of observations, or one label) into a standardized statistic `u`, and a CUSUM per
channel and alternative `d` adds up the log-likelihood ratio of the step:

    L <- max(L, 0) + d * u - K(d)

where K is the cumulant generating function of `u` on data that did not change (so exp(d u - K)
has mean one: an e-value). The detector's evidence is the largest L; it alarms when that reaches
the threshold `h`. The threshold comes from simulating the detector on data drawn from the
reference (the same bootstrap that calibrates the windows): the alarm rate on that data falls
as exp(-h) (the CUSUM's average run length grows as e^h), so one simulated rate sets `h` for any
false-alarm budget.

What each step is compared with is the *baseline*: the reference at first, then the reference
and every step that came since, while no episode is open (a self-starting CUSUM). So the evidence
of a change is judged against all the data seen before it, and the uncertainty of the reference
(its size) is in every statistic: `u` is standardized by the variance of the step *and* of the
baseline mean. During an episode the baseline stops learning, and the evidence is held: each
CUSUM is capped where, with the data back to the baseline, it falls below the threshold within
half the recovery span (`recover` windows). A lasting drift keeps it at its cap, so the episode
stays open; without the cap the smallest alternative, whose evidence fades slowest, would hold
an episode open long after the data recovered.

Channels of the data side:
- a numeric feature: the mean normal score of the step's values under the reference's
  distribution (a change of location), and of their distances from the reference median (a
  change of spread), both two-sided; their null K is the exact one of the bootstrap (a step's
  mean over rows drawn from the reference), so a skewed or discrete feature keeps its rate;
- the predicted classes of a binary model: the share of the second class, two-sided;
- a categorical feature and the predicted classes of more: Pearson's chi-squared of the step's
  counts against the baseline shares, values too rare for the step pooled into one bucket (unseen
  values included), as a normal deviate (Wilson-Hilferty), one-sided; its null K is taken from
  multinomial draws;
- all features at once: the mean normal score of each row's PCA reconstruction error, one-sided
  (a better fit is no drift).

The label side is one channel per label: the error indicator against the baseline error rate's
upper confidence bound (holdout errors first, then the labels since, each learned some labels
later), one-sided, with alternatives at multiples of the error odds; the log-likelihood ratio
of a Bernoulli is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import ndtri

from .detectors import MULTIVARIATE, PREDICTION, Reference, codes, conform

DELTAS = (0.5, 1.0, 2.0, 4.0)  # alternatives in standard deviations of a step's statistic
ODDS = (1.3, 1.6, 2.2, 3.5)  # label alternatives: error odds times these
LABEL_LAG = 3_000  # labels a label waits before the baseline learns it
LABEL_CHUNK = 100
MIN_EXPECTED = 5.0  # a categorical value expected fewer times a step joins the rare bucket
HOLD = 2.0  # evidence is capped at HOLD * h while an episode is open (or lower, see `caps`)
# An episode's evidence has faded when no CUSUM holds enough for an alarm (below REST * h): the
# largest of many CUSUMs on stationary data wanders up to most of the threshold, so a lower
# bar would keep episodes open on data that recovered.
REST = 1.0
HELD_Z = 2.0  # while held: the margin for the frozen baseline's error, in its std
CGF_DRAWS = 20_000
SIM_REPLICATES = 128  # simulated streams, stepped side by side
SIM_STEPS = 1_500
LABEL_Z = 2.0  # upper confidence bound of the baseline error rate (z of a normal)

Side = Literal["two", "up"]


def normal_scores(values: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """Each value's normal quantile of its mid-rank among the reference's values: standard
    normal for a value drawn from the reference, whatever the feature's distribution."""
    below = np.searchsorted(reference_sorted, values, "left")
    upto = np.searchsorted(reference_sorted, values, "right")
    m = len(reference_sorted)
    return np.asarray(ndtri((below + upto + 1) / (2 * (m + 1))))


# --- channels ---------------------------------------------------------------------------------


@dataclass
class ScoreChannel:
    """A two-sided (or upward) channel on the mean of per-row scores."""

    name: str
    test: str  # the feature (or test) it belongs to
    side: Side
    reference_scores: np.ndarray = field(repr=False)
    # baseline: rows, mean and sum of squared deviations of the scores (Welford)
    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    def __post_init__(self) -> None:
        if self.n == 0.0:
            s = self.reference_scores
            self.n, self.mean = float(len(s)), float(s.mean())
            self.m2 = float(((s - self.mean) ** 2).sum())

    def deltas(self) -> np.ndarray:
        d = np.asarray(DELTAS)
        return np.concatenate([d, -d]) if self.side == "two" else d

    def u(self, scores: np.ndarray) -> tuple[float, float]:
        """The step's standardized statistic and the baseline's share of its variance."""
        k = len(scores)
        var = self.m2 / max(self.n - 1, 1.0) or 1.0
        share = (1 / self.n) / (1 / k + 1 / self.n)
        return (float(scores.mean()) - self.mean) / math.sqrt(var * (1 / k + 1 / self.n)), share

    def absorb(self, scores: np.ndarray) -> None:
        k, mean = len(scores), float(scores.mean())
        m2 = float(((scores - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.n + k
        self.mean += delta * k / total
        self.m2 += m2 + delta**2 * self.n * k / total
        self.n = total

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    def restore(self, state: dict[str, Any]) -> None:
        self.n, self.mean, self.m2 = float(state["n"]), float(state["mean"]), float(state["m2"])


@dataclass
class CountChannel:
    """An upward channel on the chi-squared of a step's counts against the baseline shares."""

    name: str
    test: str
    buckets: np.ndarray  # value index -> bucket (the last bucket pools the rare values)
    counts: np.ndarray  # baseline counts per bucket
    side: Side = "up"

    def deltas(self) -> np.ndarray:
        return np.asarray(DELTAS)

    def chi(self, step_counts: np.ndarray, baseline: np.ndarray) -> float:
        k = step_counts.sum()
        shares = (baseline + 0.5) / (baseline + 0.5).sum()
        expected = k * shares
        x2 = float(((step_counts - expected) ** 2 / expected).sum())
        df = len(baseline) - 1
        # the baseline's own sampling error adds to a step's chi-squared about k / n of it
        x2 /= 1 + k / max(float(baseline.sum()), 1.0)
        c = 2 / (9 * df)
        return ((x2 / df) ** (1 / 3) - (1 - c)) / math.sqrt(c)

    def bucketed(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.buckets[values], minlength=len(self.counts)).astype(float)

    def u(self, step_counts: np.ndarray) -> tuple[float, float]:
        return self.chi(step_counts, self.counts), 0.0

    def absorb(self, step_counts: np.ndarray) -> None:
        self.counts = self.counts + step_counts

    def state(self) -> dict[str, Any]:
        return {"counts": self.counts.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.counts = np.asarray(state["counts"], dtype=np.float64)


def count_channel(name: str, test: str, reference_counts: np.ndarray, step: int) -> CountChannel:
    """Values expected at least MIN_EXPECTED times a step keep a bucket; the rest (and values the
    reference never saw, the last index) share one."""
    shares = reference_counts / max(float(reference_counts.sum()), 1.0)
    kept = [i for i in range(len(shares) - 1) if shares[i] * step >= MIN_EXPECTED]
    rare = len(kept)
    buckets = np.full(len(shares), rare, dtype=np.int64)
    buckets[kept] = np.arange(rare)
    counts = np.bincount(buckets, weights=reference_counts, minlength=rare + 1)
    if counts[rare] == 0:  # nothing rare yet: an unseen value still has its bucket
        counts = counts.astype(float)
    return CountChannel(name, test, buckets, counts.astype(float))


Channel = ScoreChannel | CountChannel


# --- the CUSUM bank ---------------------------------------------------------------------------


@dataclass
class Evidence:
    statistic: float  # the largest log-likelihood ratio of any channel and alternative
    threshold: float
    alarm: bool  # crossed the threshold at this step (never while an episode is open)
    at_rest: bool  # below REST * threshold
    leaders: list[tuple[str, float]]  # tests by their largest evidence, strongest first
    onset: int  # steps ago the leading CUSUM last started from zero (the change's estimate)


@dataclass
class Bank:
    """CUSUMs of every channel and alternative ("arms"), stepped together."""

    channel: np.ndarray  # arm -> channel index
    delta: np.ndarray  # arm -> alternative
    k: np.ndarray  # arm -> null cumulant generating function of the window part
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    runs: np.ndarray = field(
        default_factory=lambda: np.zeros(0)
    )  # steps since each arm last left zero

    def __post_init__(self) -> None:
        if self.levels.shape != self.delta.shape:
            self.levels = np.zeros(len(self.delta))
            self.runs = np.zeros(len(self.delta))

    def increments(self, u: np.ndarray, share: np.ndarray) -> np.ndarray:
        # the baseline mean's own error is normal: its part of K is d^2 * share / 2
        return self.delta * u[self.channel] - self.k - self.delta**2 * share[self.channel] / 2

    def step(self, u: np.ndarray, share: np.ndarray, cap: np.ndarray | None) -> None:
        restart = self.levels <= 0
        self.runs = np.where(restart, 1, self.runs + 1)
        increments = self.increments(u, share)
        if cap is not None:
            # held: the baseline no longer learns, so its own error is shared by every step
            # from now on; a margin of HELD_Z of its standard deviations keeps that error from
            # passing for a drift that lasts (and an episode from never closing)
            increments -= np.abs(self.delta) * HELD_Z * np.sqrt(share[self.channel])
        self.levels = np.maximum(self.levels, 0) + increments
        if cap is not None:
            self.levels = np.minimum(self.levels, cap)

    def reset(self) -> None:
        self.levels = np.zeros(len(self.delta))
        self.runs = np.zeros(len(self.delta))


LEVELS = (6.0, 8.0, 10.0, 12.0)  # thresholds one simulation measures at once
COUNTABLE = 40  # alarms a measured rate needs


def simulated_rates(
    increments: Callable[[int, int], np.ndarray], arms: int, *, replicates: int, steps: int
) -> np.ndarray:
    """Alarms per step at each of LEVELS of a bank of `arms` CUSUMs (restarted after each
    alarm), in one pass over simulated steps; `increments(t, n)` gives the increments of steps
    t..t+n as [n, replicates, arms]."""
    h = np.asarray(LEVELS)[:, None, None]
    levels = np.zeros((len(LEVELS), replicates, arms))
    alarms = np.zeros(len(LEVELS))
    chunk = 250
    for t in range(0, steps, chunk):
        block = increments(t, min(chunk, steps - t))
        for inc in block:
            levels = np.maximum(levels, 0) + inc
            hit = levels.max(axis=2, keepdims=True) >= h
            alarms += hit.sum(axis=(1, 2))
            levels = np.where(hit, 0.0, levels)
    return alarms / (replicates * steps)


def extrapolated_threshold(
    rates: np.ndarray, runs: int, target_rate: float
) -> tuple[float, float, float]:
    """The threshold whose alarm rate per step is `target_rate`.

    A CUSUM's alarm rate falls as exp(-h) once h is large, more slowly below: the rates measured
    by simulation (`rates` at LEVELS, over `runs` steps) are carried from the highest threshold
    with enough alarms to count, along the slope from the threshold below it (at most 1, which
    only overstates the rate further out). Returns (threshold, the threshold measured at, its
    rate)."""
    counted = [i for i, r in enumerate(rates) if r * runs >= COUNTABLE]
    if not counted:  # too quiet to measure even at the lowest: as if one alarm, slope 1
        rate = max(float(rates[0]), 1.0 / runs)
        return LEVELS[0] + math.log(rate / target_rate), LEVELS[0], rate
    top = counted[-1]
    rate = float(rates[top])
    slope = 0.5  # one countable point: the slowest fall a CUSUM shows at these thresholds
    if top > 0:
        gap = LEVELS[top] - LEVELS[top - 1]
        slope = min(1.0, max(0.5, math.log(float(rates[top - 1]) / rate) / gap))
    return LEVELS[top] + math.log(rate / target_rate) / slope, LEVELS[top], rate


def released(state: dict[str, Any]) -> dict[str, Any]:
    """A stored detector's state once its episode closed: no evidence, learning again."""
    return state | {
        "held": False,
        "rested": 0,
        "levels": [0.0] * len(state["levels"]),
        "runs": [0.0] * len(state["runs"]),
    }


def paths(window_rule: bool, sequential: bool) -> int:
    """How many paths share each false-alarm budget (the window rule, the sequential one)."""
    return max(1, int(window_rule) + int(sequential))


def budget_rate(false_alarms_per_million: float, step: int) -> float:
    """A budget of false alarms per million observations as a rate per step."""
    return false_alarms_per_million * step / 1e6


@dataclass
class Sequence:
    """A bank of CUSUMs over channels, its threshold, and whether an episode holds it."""

    channels: list[Channel]
    bank: Bank
    threshold: float
    held: bool = False  # an episode is open: the baseline stops learning, evidence is capped
    steps: int = 0
    rested: int = 0  # observations in a row with the evidence at rest while held
    recovery_steps: int = 12  # steps in the span an episode needs to recover

    def caps(self) -> np.ndarray:
        """Each CUSUM's level while held: at most what half the recovery span washes out on
        data back at the baseline (each step takes K of the alternative off on average; the
        other half leaves room for chance)."""
        fade = self.bank.k * self.recovery_steps / 2
        return np.minimum(HOLD * self.threshold, REST * self.threshold + fade)

    def _evidence(self, alarm: bool) -> Evidence:
        levels = self.bank.levels
        best: dict[str, float] = {}
        for arm, level in enumerate(levels):
            test = self.channels[int(self.bank.channel[arm])].test
            best[test] = max(best.get(test, -math.inf), float(level))
        top = int(np.argmax(levels)) if len(levels) else 0
        statistic = float(levels.max()) if len(levels) else 0.0
        return Evidence(
            statistic=statistic,
            threshold=self.threshold,
            alarm=alarm,
            at_rest=statistic < REST * self.threshold,
            leaders=sorted(best.items(), key=lambda kv: -kv[1]),
            onset=int(self.bank.runs[top]) if len(levels) else 0,
        )

    def advance(self, u: np.ndarray, share: np.ndarray, rows: int) -> Evidence:
        self.steps += 1
        held = self.held
        self.bank.step(u, share, self.caps() if held else None)
        evidence = self._evidence(
            not held and float(self.bank.levels.max(initial=0.0)) >= self.threshold
        )
        if held:
            self.rested = self.rested + rows if evidence.at_rest else 0
        elif evidence.alarm:
            self.hold()  # the steps that led here, and those after, never join the baseline
        return evidence

    def hold(self) -> None:
        """An episode opened: keep the baseline as it was before the change."""
        self.held = True
        self.rested = 0

    def release(self) -> None:
        """The episode closed: start again from no evidence, learning the baseline again."""
        self.held = False
        self.rested = 0
        self.bank.reset()

    def state(self) -> dict[str, Any]:
        return {
            "levels": self.bank.levels.tolist(),
            "runs": self.bank.runs.tolist(),
            "held": self.held,
            "steps": self.steps,
            "rested": self.rested,
            "channels": [c.state() for c in self.channels],
        }

    def restore(self, state: dict[str, Any]) -> None:
        levels = np.asarray(state["levels"], dtype=np.float64)
        if levels.shape != self.bank.levels.shape or len(state["channels"]) != len(self.channels):
            return  # a state of another shape (another reference): start afresh
        self.bank.levels = levels
        self.bank.runs = np.asarray(state["runs"], dtype=np.float64)
        self.held = bool(state["held"])
        self.steps = int(state["steps"])
        self.rested = int(state.get("rested", 0))
        for c, s in zip(self.channels, state["channels"], strict=True):
            c.restore(s)


def _bank(channels: list[Channel], cgfs: list[np.ndarray]) -> Bank:
    channel = np.concatenate([np.full(len(c.deltas()), i) for i, c in enumerate(channels)])
    return Bank(
        channel=channel.astype(np.int64),
        delta=np.concatenate([c.deltas() for c in channels]) if channels else np.zeros(0),
        k=np.concatenate(cgfs) if cgfs else np.zeros(0),
    )


# --- the data side ----------------------------------------------------------------------------


@dataclass
class DataSequence(Sequence):
    """The data side: every `step` observations are one step of every channel."""

    reference: Reference | None = None
    step_rows: int = 50

    def observe(self, rows: np.ndarray, predicted: np.ndarray | None = None) -> Evidence:
        assert self.reference is not None
        ref = self.reference
        rows = conform(np.asarray(rows, dtype=np.float64), ref.precision)
        inputs = channel_inputs(ref, self.channels, rows, predicted)
        u = np.zeros(len(self.channels))
        share = np.zeros(len(self.channels))
        for i, (c, x) in enumerate(zip(self.channels, inputs, strict=True)):
            if x is not None:
                u[i], share[i] = c.u(x)
        held = self.held
        evidence = self.advance(u, share, len(rows))
        if not held and not evidence.alarm:
            for c, x in zip(self.channels, inputs, strict=True):
                if x is not None:
                    c.absorb(x)
        return evidence


def channel_inputs(
    ref: Reference, channels: list[Channel], rows: np.ndarray, predicted: np.ndarray | None
) -> list[np.ndarray | None]:
    """What each channel reads from a step's rows: per-row scores or bucket counts."""
    out: list[np.ndarray | None] = []
    groups = {g.name: g for g in ref.groups}
    errors = ref.pca.errors(rows) if ref.pca is not None else None
    for c in channels:
        if c.test == MULTIVARIATE:
            assert errors is not None and ref.pca_errors is not None
            out.append(normal_scores(errors, np.sort(ref.pca_errors)))
        elif c.test == PREDICTION:
            known = predicted[predicted >= 0] if predicted is not None else np.zeros(0, int)
            if not known.size:
                out.append(None)
            elif isinstance(c, CountChannel):
                out.append(c.bucketed(known))
            else:
                out.append((known == 1).astype(np.float64))
        elif isinstance(c, CountChannel):
            out.append(c.bucketed(codes(rows, groups[c.test])))
        else:
            j = groups[c.test].columns[0]
            reference = ref.sorted_columns[j]
            if c.name.endswith("spread"):
                median = float(np.median(reference))
                out.append(normal_scores(np.abs(rows[:, j] - median), ref.sorted_spreads[j]))
            else:
                out.append(normal_scores(rows[:, j], reference))
    return out


def data_channels(ref: Reference, step: int) -> list[Channel]:
    channels: list[Channel] = []
    for g in ref.groups:
        if g.kind == "numeric":
            j = g.columns[0]
            column, spreads = ref.sorted_columns[j], ref.sorted_spreads[j]
            if column[0] == column[-1]:
                continue  # a constant: the window tests see any value it never took
            median = float(np.median(column))
            own = np.abs(ref.sample[:, j] - median)
            channels.append(
                ScoreChannel(
                    f"{g.name} location", g.name, "two", normal_scores(ref.sample[:, j], column)
                )
            )
            channels.append(
                ScoreChannel(f"{g.name} spread", g.name, "two", normal_scores(own, spreads))
            )
        else:
            counts = ref.category_counts[g.name]
            if (counts > 0).sum() >= 1:
                channels.append(count_channel(g.name, g.name, counts, step))
    if ref.prediction_counts is not None and len(ref.classes) == 2:
        # two classes: the share of the second, a mean that keeps the direction of a change
        # (a prior shift moves it one way step after step)
        m = max(ref.rows, 1)
        second = round(float(ref.prediction_counts[1] / ref.prediction_counts.sum()) * m)
        if 0 < second < m:
            scores = np.r_[np.zeros(m - second), np.ones(second)]
            channels.append(ScoreChannel(PREDICTION, PREDICTION, "two", scores))
    elif ref.prediction_counts is not None and len(ref.classes) > 2:
        counts = np.append(ref.prediction_counts, 0.0)  # an index for "never predicted"
        channels.append(count_channel(PREDICTION, PREDICTION, counts, step))
    if ref.pca is not None and ref.pca_errors is not None:
        errors = ref.pca_errors
        channels.append(
            ScoreChannel(MULTIVARIATE, MULTIVARIATE, "up", normal_scores(errors, np.sort(errors)))
        )
    return [c for c in channels if not isinstance(c, CountChannel) or len(c.counts) >= 2]


def null_pool(channel: Channel, step: int, rng: np.random.Generator) -> np.ndarray:
    """Statistics of steps drawn from the reference: the bootstrap's null distribution."""
    if isinstance(channel, ScoreChannel):
        z = channel.reference_scores
        sd = float(z.std()) or 1.0
        draws = z[rng.integers(len(z), size=(CGF_DRAWS, step))].mean(axis=1)
        return np.asarray((draws - z.mean()) / (sd / math.sqrt(step)))
    shares = channel.counts / channel.counts.sum()
    draws = rng.multinomial(step, shares, size=CGF_DRAWS // 4).astype(float)
    return np.asarray([channel.chi(d, channel.counts) for d in draws])


@dataclass(frozen=True)
class SequentialCalibration:
    step: int
    threshold: float
    target_rate: float  # alarms per step the budget allows
    measured_at: float | None  # the threshold the simulation measured
    measured_rate: float | None  # and the rate it found there

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "step": self.step,
            "threshold": self.threshold,
            "target_rate": self.target_rate,
            "measured_at": self.measured_at,
            "measured_rate": self.measured_rate,
        }


def _cgf(pool: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    lam = deltas[:, None] * pool[None, :]
    top = lam.max(axis=1, keepdims=True)
    return np.asarray(top[:, 0] + np.log(np.exp(lam - top).mean(axis=1)))


def data_sequence(
    ref: Reference,
    *,
    step: int,
    false_alarms_per_million: float,
    threshold: float | None = None,
    seed: int = 0,
) -> tuple[DataSequence, SequentialCalibration]:
    """The data side's detector for a reference; its threshold calibrated to the budget unless
    given (a calibration made before)."""
    rng = np.random.default_rng(seed)
    channels = data_channels(ref, step)
    pools = [null_pool(c, step, rng) for c in channels]
    cgfs = [_cgf(pool, c.deltas()) for c, pool in zip(channels, pools, strict=True)]
    bank = _bank(channels, cgfs)
    target = budget_rate(false_alarms_per_million, step)
    if threshold is None:
        draws = np.random.default_rng(seed + 1)

        def increments(t: int, n: int) -> np.ndarray:
            u = np.stack(
                [p[draws.integers(len(p), size=(n, SIM_REPLICATES))] for p in pools], axis=-1
            )
            return np.asarray(bank.delta * u[:, :, bank.channel] - bank.k)

        rates = simulated_rates(
            increments, len(bank.delta), replicates=SIM_REPLICATES, steps=SIM_STEPS
        )
        threshold, at, rate = extrapolated_threshold(rates, SIM_REPLICATES * SIM_STEPS, target)
    else:
        at, rate = None, None
    calibration = SequentialCalibration(step, threshold, target, at, rate)
    sequence = DataSequence(
        channels=channels, bank=bank, threshold=threshold, reference=ref, step_rows=step
    )
    return sequence, calibration


# --- the label side ---------------------------------------------------------------------------


def upper_error(errors: float, n: float, z: float = LABEL_Z) -> float:
    """Wilson's upper confidence bound of an error rate seen as `errors` of `n`."""
    if n <= 0:
        return 0.5
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min((centre + spread) / (1 + z * z / n), 1 - 1e-9)


def _alternatives(p0: float) -> np.ndarray:
    odds = p0 / (1 - p0) * np.asarray(ODDS)
    return np.asarray(odds / (1 + odds))


@dataclass
class ErrorSequence:
    """The label side: each label's error indicator against the baseline error rate's upper
    confidence bound, so that a small or lucky holdout is not taken at its word.

    The baseline learns a label only `LABEL_LAG` labels later: a drop in accuracy is small
    against the noise of single labels, so its evidence takes long to build, and a baseline that
    learned the drifted labels at once would follow the drop and hide it. The baseline's own
    error, shared by every step, is covered by the upper bound and by the smallest alternative's
    distance from the bound."""

    errors: float  # baseline: holdout errors, then the labels' while no episode is open
    n: float
    threshold: float
    levels: np.ndarray = field(default_factory=lambda: np.zeros(len(ODDS)))
    runs: np.ndarray = field(default_factory=lambda: np.zeros(len(ODDS)))
    held: bool = False
    steps: int = 0
    pending: list[list[float]] = field(default_factory=list)  # [errors, labels] per chunk
    rested: int = 0  # labels in a row with the evidence at rest while held
    recovery_labels: int = 600  # labels in the span an episode needs to recover

    @property
    def reference_error(self) -> float:
        return upper_error(self.errors, self.n)

    def observe(self, wrong: bool) -> Evidence:
        p0 = self.reference_error
        p1 = _alternatives(p0)
        llr = np.log(p1 / p0) if wrong else np.log((1 - p1) / (1 - p0))
        self.runs = np.where(self.levels <= 0, 1, self.runs + 1)
        self.levels = np.maximum(self.levels, 0) + llr
        if self.held:
            # at most what half the recovery span washes out at the baseline's rate: each label
            # takes the Kullback-Leibler divergence of the baseline from the alternative off
            fade = p0 * np.log(p0 / p1) + (1 - p0) * np.log((1 - p0) / (1 - p1))
            cap = np.minimum(
                HOLD * self.threshold, REST * self.threshold + fade * self.recovery_labels / 2
            )
            self.levels = np.minimum(self.levels, cap)
        self.steps += 1
        statistic = float(self.levels.max())
        top = int(np.argmax(self.levels))
        evidence = Evidence(
            statistic=statistic,
            threshold=self.threshold,
            alarm=not self.held and statistic >= self.threshold,
            at_rest=statistic < REST * self.threshold,
            leaders=[("error rate", statistic)],
            onset=int(self.runs[top]),
        )
        if self.held:
            self.rested = self.rested + 1 if evidence.at_rest else 0
        elif evidence.alarm:
            self.hold()
        else:
            self._learn(wrong)
        return evidence

    def _learn(self, wrong: bool) -> None:
        if not self.pending or self.pending[-1][1] >= LABEL_CHUNK:
            self.pending.append([0.0, 0.0])
        self.pending[-1][0] += float(wrong)
        self.pending[-1][1] += 1
        while sum(c[1] for c in self.pending) - self.pending[0][1] >= LABEL_LAG:
            errors, n = self.pending.pop(0)
            self.errors += errors
            self.n += n

    def hold(self) -> None:
        """An episode opened: the labels that led to it never join the baseline."""
        self.held = True
        self.pending = []
        self.rested = 0

    def release(self) -> None:
        self.held = False
        self.rested = 0
        self.levels = np.zeros(len(ODDS))
        self.runs = np.zeros(len(ODDS))

    def state(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "n": self.n,
            "levels": self.levels.tolist(),
            "runs": self.runs.tolist(),
            "held": self.held,
            "steps": self.steps,
            "pending": self.pending,
            "rested": self.rested,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.pending = [list(map(float, c)) for c in state.get("pending", [])]
        self.errors, self.n = float(state["errors"]), float(state["n"])
        self.levels = np.asarray(state["levels"], dtype=np.float64)
        self.runs = np.asarray(state["runs"], dtype=np.float64)
        self.held, self.steps = bool(state["held"]), int(state["steps"])
        self.rested = int(state.get("rested", 0))


def label_threshold(
    reference_accuracy: float, holdout_rows: int, false_alarms_per_million: float, seed: int = 0
) -> SequentialCalibration:
    """The label side's threshold: the detector simulated on labels whose error rate is the
    baseline's bound itself (the worst case of no drift), carried to the budget."""
    p0 = upper_error((1 - reference_accuracy) * holdout_rows, holdout_rows)
    p1 = _alternatives(p0)
    rng = np.random.default_rng(seed)
    replicates, steps = 4 * SIM_REPLICATES, 4 * SIM_STEPS
    target = budget_rate(false_alarms_per_million, 1)

    up, down = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))

    def increments(t: int, n: int) -> np.ndarray:
        wrong = rng.random((n, replicates, 1)) < p0
        return np.asarray(np.where(wrong, up, down))

    rates = simulated_rates(increments, len(ODDS), replicates=replicates, steps=steps)
    threshold, h_at, measured = extrapolated_threshold(rates, replicates * steps, target)
    return SequentialCalibration(1, threshold, target, h_at, measured)
