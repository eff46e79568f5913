import math

import numpy as np
import pytest

from conveyor_contracts.project import DriftPolicy
from conveyor_monitor.domain.detectors import (
    MULTIVARIATE,
    PREDICTION,
    bh_adjusted,
    calibrate,
    data_drift,
    detectable_shift,
    effect_size,
    episode_closes,
    episode_opens,
    feature_groups,
    performance_drift,
    prepare,
    reference_from_profile,
    window_rate,
    window_size,
)

POLICY = DriftPolicy(window=200, alpha=0.001, min_effect=0.2, k=2, n=3)
NAMES = [f"f{i}" for i in range(20)]


def test_benjamini_hochberg_on_a_known_example():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert [q <= 0.05 for q in bh_adjusted(p)] == [True, True] + [False] * 8
    assert [q <= 0.05 for q in bh_adjusted([0.5, 0.01, 0.02])] == [False, True, True]
    assert bh_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_stationary_windows_open_no_episode():
    rng = np.random.default_rng(1)
    reference = prepare(rng.normal(size=(1000, 20)), NAMES)
    history = []
    for _ in range(150):
        verdict = data_drift(rng.normal(size=(200, 20)), reference, POLICY)
        history.append(verdict.drifted)
        assert not episode_opens(history, POLICY)


def test_a_one_std_shift_in_one_feature_of_twenty_is_found_in_two_windows():
    rng = np.random.default_rng(2)
    reference = prepare(rng.normal(size=(1000, 20)), NAMES)
    history = []
    for _ in range(2):
        window = rng.normal(size=(200, 20))
        window[:, 7] += 1.0
        verdict = data_drift(window, reference, POLICY)
        assert [f.feature for f in verdict.features if f.drifted] == ["f7"]
        history.append(verdict.drifted)
    assert episode_opens(history, POLICY)


def test_one_hot_columns_are_one_categorical_feature_with_unseen_values_bucketed():
    names = ["const", "colour=red", "colour=blue", "amount"]
    assert [(g.name, g.kind, g.columns) for g in feature_groups(names)] == [
        ("const", "numeric", (0,)),
        ("colour", "categorical", (1, 2)),
        ("amount", "numeric", (3,)),
    ]
    rng = np.random.default_rng(3)
    reference = np.zeros((600, 4))
    reference[:300, 1] = 1.0
    reference[300:, 2] = 1.0
    reference[:, 3] = rng.normal(size=600)
    same = reference[rng.integers(600, size=200)]
    unseen = same.copy()
    unseen[:120, 1:3] = 0.0  # a colour the model never saw: all its columns zero
    ref = prepare(reference, names)
    for window in (same, unseen):
        for f in data_drift(window, ref, POLICY).features:
            assert all(math.isfinite(v) for v in (f.statistic, f.p_value, f.effect, f.psi)), f
    by = {f.feature: f for f in data_drift(same, ref, POLICY).features}
    assert not any(f.drifted for f in by.values())
    assert by["const"].p_value == 1.0 and by["const"].effect == 0.0
    by = {f.feature: f for f in data_drift(unseen, ref, POLICY).features}
    assert by["colour"].drifted and by["colour"].kind == "categorical"
    assert 0.1 < by["colour"].effect <= 1.0  # Jensen-Shannon distance
    assert not by["const"].drifted and not by["amount"].drifted
    assert effect_size(np.ones(5), np.ones(5)) == 0.0


def test_predicted_classes_drift_against_the_holdout_shares():
    rng = np.random.default_rng(4)
    ref = prepare(rng.normal(size=(1000, 3)), ["a", "b", "c"], {"ok": 0.8, "fraud": 0.2})
    window = rng.normal(size=(200, 3))
    steady = rng.choice(2, size=200, p=[0.8, 0.2])
    shifted = rng.choice(2, size=200, p=[0.45, 0.55])
    by = {f.feature: f for f in data_drift(window, ref, POLICY, steady).features}
    assert not by[PREDICTION].drifted
    by = {f.feature: f for f in data_drift(window, ref, POLICY, shifted).features}
    assert by[PREDICTION].drifted and by[PREDICTION].kind == "prediction"
    assert not by["a"].drifted


def test_the_multivariate_detector_finds_a_broken_correlation_the_marginals_miss():
    rng = np.random.default_rng(5)

    def rows(n: int, rho: float) -> np.ndarray:
        z = rng.normal(size=(n, 4))
        z[:, 1] = rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
        z[:, 3] = rho * z[:, 2] + math.sqrt(1 - rho**2) * z[:, 3]
        return z

    ref = prepare(rows(1000, 0.95), ["a", "b", "c", "d"])
    steady = {f.feature: f for f in data_drift(rows(200, 0.95), ref, POLICY).features}
    assert not any(f.drifted for f in steady.values())
    broken = {f.feature: f for f in data_drift(rows(200, -0.95), ref, POLICY).features}
    assert broken[MULTIVARIATE].drifted and broken[MULTIVARIATE].kind == "multivariate"
    assert not any(broken[n].drifted for n in "abcd")  # each feature alone is unchanged


def test_calibration_sets_alpha_from_the_false_alarm_budget():
    # Loose policy alpha and no effect gate: only the calibration keeps stationary windows quiet.
    policy = DriftPolicy(alpha=0.5, min_effect=0, min_distance=0, false_alarms_per_million=20)
    rate = window_rate(policy, 200)
    assert rate == pytest.approx(math.sqrt(20 / (5000 * 3)))
    rng = np.random.default_rng(6)
    ref = prepare(rng.normal(size=(1000, 10)), NAMES[:10])
    cal = calibrate(ref, policy, draws=300)
    assert cal.alpha < 0.05 and cal.bootstrap_rate <= rate
    drifted = sum(
        data_drift(rng.normal(size=(200, 10)), ref, policy, alpha=cal.alpha).drifted
        for _ in range(300)
    )
    assert drifted / 300 <= 4 * rate  # fresh stationary windows stay near the budget
    uncalibrated = sum(
        data_drift(rng.normal(size=(200, 10)), ref, policy).drifted for _ in range(100)
    )
    assert uncalibrated / 100 > 4 * rate


def test_bigger_windows_find_smaller_shifts_and_auto_picks_the_smallest_that_suffices():
    assert detectable_shift(0.001, 20, 800, 1000) < detectable_shift(0.001, 20, 200, 1000)
    small = window_size(DriftPolicy(window="auto", min_effect=0.5), 20, 1000)
    large = window_size(DriftPolicy(window="auto", min_effect=0.3), 20, 1000)
    assert small < large
    assert detectable_shift(0.001, 20, small, 1000) <= 0.5
    assert window_size(POLICY, 20, 1000) == 200


def test_performance_alarms_are_one_sided():
    assert performance_drift(110, 200, 0.9, POLICY).drifted
    assert not performance_drift(199, 200, 0.9, POLICY).drifted  # better: nothing
    assert not performance_drift(172, 200, 0.9, POLICY).drifted  # 0.86: within noise and drop


def test_k_of_n_opens_and_recover_clean_windows_close():
    assert episode_opens([True, False, True], POLICY)
    assert not episode_opens([True, False, False, True], POLICY)
    assert episode_closes([True, False, False, False], POLICY)
    assert not episode_closes([False, True, False, False], POLICY)
    assert not episode_closes([False, False], POLICY)


def _count_feature_profile(precision_field: bool):
    """The trainer's profile of a project whose first feature is log1p of a count (few distinct
    values) and whose others are continuous, as the trainer makes it from float32 rows."""
    from conveyor_examples import load_project
    from conveyor_trainer.domain import training

    spec = load_project("fraud")
    k = len(spec.feature_names())
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, k))
    x[:, 0] = np.log1p(rng.poisson(3.0, size=3000))
    data = training.Dataset(x.astype(np.float32), (x[:, 1] > 0).astype(np.int64))
    probabilities = np.column_stack([x[:600, 1] <= 0, x[:600, 1] > 0]).astype(float)
    profile = training.profile(spec, data, probabilities, 0.9)
    if not precision_field:  # a profile registered before profiles said how they were stored
        profile.pop("precision", None)
        profile["sample"] = np.asarray(profile["sample"], dtype=np.float32).round(6).tolist()
    return spec, profile


@pytest.mark.parametrize("precision_field", [True, False])
def test_live_values_are_compared_at_the_profiles_precision(precision_field):
    # Live values are float64 (log1p of a count computed by the feature service); the profile's
    # rows are the float32 training rows. Compared at different precisions, every value of a
    # discrete feature sits beside its reference twin and the KS test sees a shift in every
    # stationary window.
    spec, profile = _count_feature_profile(precision_field)
    reference = reference_from_profile(profile)
    rng = np.random.default_rng(12)
    k = len(spec.feature_names())
    p_values = []
    for _ in range(20):
        live = rng.normal(size=(200, k))
        live[:, 0] = np.log1p(rng.poisson(3.0, size=200))
        verdict = data_drift(live, reference, POLICY)
        p_values.append(
            next(f.p_value for f in verdict.features if f.feature == spec.feature_names()[0])
        )
    assert min(p_values) > 1e-4 and float(np.median(p_values)) > 0.05


def test_the_trainer_profiles_its_float32_rows_exactly_and_says_so():
    _, profile = _count_feature_profile(True)
    sample = np.asarray(profile["sample"])
    assert profile["precision"] == "float32"
    assert np.array_equal(sample.astype(np.float32).astype(np.float64), sample)
    assert len(np.unique(sample[:, 1])) > 900  # continuous values kept beyond 6 decimals
    assert not np.array_equal(sample[:, 1], sample[:, 1].round(6))


def test_the_distance_gate_of_a_categorical_with_many_levels_holds_on_stationary_windows():
    # 50 levels, 200 rows a window: the plug-in Jensen-Shannon distance of two samples of one
    # distribution is about 0.23, so a raw 0.1 gate would call most stationary windows material.
    levels = 50
    names = ["x"] + [f"merchant=m{i}" for i in range(levels)]
    shares = 1.0 / np.arange(1, levels + 1)
    shares /= shares.sum()

    def rows(rng, n, p):
        out = np.zeros((n, levels + 1))
        out[:, 0] = rng.normal(size=n)
        out[np.arange(n), 1 + rng.choice(levels, size=n, p=p)] = 1.0
        return out

    rng = np.random.default_rng(13)
    reference = prepare(rows(rng, 1000, shares), names)
    material = [
        next(
            f
            for f in data_drift(rows(rng, 200, shares), reference, POLICY).features
            if f.feature == "merchant"
        ).material
        for _ in range(200)
    ]
    assert np.mean(material) < 0.1
    # a real change of the shares (half the traffic moves to the ten rarest merchants) is
    # still material
    moved = 0.5 * shares + 0.5 * np.r_[np.zeros(levels - 10), np.full(10, 0.1)]
    changed = data_drift(rows(rng, 200, moved), reference, POLICY).features
    assert next(f for f in changed if f.feature == "merchant").material
