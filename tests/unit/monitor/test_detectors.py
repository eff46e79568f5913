import math

import numpy as np

from conveyor_contracts.project import DriftPolicy
from conveyor_monitor.domain.detectors import (
    benjamini_hochberg,
    data_drift,
    effect_size,
    episode_opens,
    performance_drift,
)

POLICY = DriftPolicy(window=200, alpha=0.001, min_effect=0.2, k=2, n=3)
NAMES = [f"f{i}" for i in range(20)]


def test_benjamini_hochberg_on_a_known_example():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert benjamini_hochberg(p, 0.05) == [True, True] + [False] * 8
    assert benjamini_hochberg([0.5, 0.01, 0.02], 0.05) == [False, True, True]


def test_stationary_windows_open_no_episode():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(1000, 20))
    history = []
    for _ in range(150):
        verdict = data_drift(rng.normal(size=(200, 20)), reference, NAMES, POLICY)
        history.append(verdict.drifted)
        assert not episode_opens(history, POLICY)


def test_a_one_std_shift_in_one_feature_of_twenty_is_found_in_two_windows():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(1000, 20))
    history = []
    for _ in range(2):
        window = rng.normal(size=(200, 20))
        window[:, 7] += 1.0
        verdict = data_drift(window, reference, NAMES, POLICY)
        assert [f.feature for f in verdict.features if f.drifted] == ["f7"]
        history.append(verdict.drifted)
    assert episode_opens(history, POLICY)


def test_constant_and_one_hot_columns_are_defined():
    reference = np.zeros((500, 3))
    reference[:250, 1] = 1.0
    window = np.zeros((200, 3))
    window[:, 2] = 1.0  # a category the reference never saw
    verdict = data_drift(window, reference, ["const", "onehot", "flip"], POLICY)
    for f in verdict.features:
        assert math.isfinite(f.statistic) and math.isfinite(f.p_value) and math.isfinite(f.effect)
    by = {f.feature: f for f in verdict.features}
    assert not by["const"].drifted and by["flip"].drifted and by["onehot"].drifted
    assert effect_size(np.ones(5), np.ones(5)) == 0.0


def test_performance_alarms_are_one_sided():
    assert performance_drift(110, 200, 0.9, POLICY).drifted
    assert not performance_drift(199, 200, 0.9, POLICY).drifted  # better: nothing
    assert not performance_drift(172, 200, 0.9, POLICY).drifted  # 0.86: within noise and drop


def test_k_of_n():
    assert episode_opens([True, False, True], POLICY)
    assert not episode_opens([True, False, False, True], POLICY)
