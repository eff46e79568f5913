import math
from datetime import UTC, datetime, timedelta

from conveyor_examples import load_project
from conveyor_feature.domain.features import (
    PastRecord,
    affected_by,
    entity_positions,
    featurize,
    numeric,
    revise,
    status,
)
from conveyor_feature.handlers import Features
from conveyor_runtime import ProjectCache

SPEC = load_project("fraud")
T = datetime(2026, 1, 1, 12, tzinfo=UTC)
FIELDS = {"customer": "c-1", "amount": math.e - 1, "merchant": "online", "hour": 3, "foreign": True}
NAMES = SPEC.feature_names()


def _f(values, name):
    return values[NAMES.index(name)]


def _past(minutes_ago, amount, rid=None):
    return PastRecord(
        rid or f"r{minutes_ago}", T - timedelta(minutes=minutes_ago), {"amount": amount}
    )


def test_plain_features():
    v = featurize(SPEC, FIELDS, T, [])
    assert len(v) == len(NAMES)
    assert math.isclose(_f(v, "log_amount"), 1.0)
    assert [_f(v, f"merchant={m}") for m in ("grocery", "online")] == [0.0, 1.0]
    assert _f(v, "hour") == 3.0 and _f(v, "foreign") == 1.0


def test_unseen_category_and_missing_values_take_defaults():
    v = featurize(SPEC, {"merchant": "casino", "amount": None}, T, [])
    assert sum(_f(v, f"merchant={m}") for m in SPEC.features[1].categories) == 0.0
    assert _f(v, "log_amount") == 0.0
    assert all(math.isfinite(x) for x in v)


def test_negative_amounts_never_make_nan():
    assert all(math.isfinite(x) for x in featurize(SPEC, FIELDS | {"amount": -5.0}, T, []))


def test_numbers_beyond_a_float_take_defaults_rather_than_raise():
    # the contract refuses them; a record stored before it did may still hold one
    assert numeric(10**400) is None and numeric(-(10**400)) is None
    assert numeric(float("nan")) is None and numeric(2**63) == float(2**63)
    v = featurize(SPEC, FIELDS | {"amount": 10**400}, T, [_past(5, 10**400), _past(6, 2.0)])
    assert _f(v, "log_amount") == 0.0 and _f(v, "amount_mean_1h") == 2.0


def test_aggregates_use_only_earlier_records_within_the_window():
    history = [
        _past(10, 10.0),
        _past(30, 30.0),
        _past(90, 1000.0),  # 90 min: outside 1 h
        PastRecord("same-time", T, {"amount": 5000.0}),  # not strictly before
        PastRecord("later", T + timedelta(minutes=1), {"amount": 7000.0}),
    ]
    v = featurize(SPEC, FIELDS, T, history)
    assert _f(v, "amount_mean_1h") == 20.0
    assert _f(v, "payments_1h") == 2.0
    assert _f(v, "since_last_s") == 600.0


def test_history_order_does_not_matter():
    history = [_past(5, 1.0), _past(20, 2.0), _past(50, 3.0)]
    assert featurize(SPEC, FIELDS, T, history) == featurize(SPEC, FIELDS, T, history[::-1])


def test_no_history_gives_defaults():
    v = featurize(SPEC, FIELDS, T, [])
    assert _f(v, "payments_1h") == 0.0 and _f(v, "amount_mean_1h") == 0.0
    assert _f(v, "since_last_s") == 86400.0


def test_freshness_is_now_minus_the_newest_event_time():
    features = Features(ProjectCache(), store=None, bus=None)  # type: ignore[arg-type]
    features.newest["fraud"] = datetime.now(UTC) - timedelta(seconds=90)
    (observation,) = features._freshness(None)  # type: ignore[arg-type]
    assert observation.attributes == {"project": "fraud"}
    assert 90 <= observation.value < 100


def test_a_late_record_revises_only_the_rows_its_windows_reach():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    spec = SPEC  # windows of one hour, and time since last
    names = spec.feature_names()
    assert [names[i] for i in entity_positions(spec)] == [
        "amount_mean_1h",
        "payments_1h",
        "since_last_s",
    ]
    history = [
        PastRecord(rid, t0 + timedelta(minutes=m), {"amount": 10.0})
        for rid, m in (("a", 0), ("b", 30), ("c", 200), ("d", 250))
    ]
    late = PastRecord("late", t0 + timedelta(minutes=20), {"amount": 40.0})
    assert affected_by(spec, late, history) == ["b"]  # c is 3 h later: out of reach
    late = PastRecord("late", t0 + timedelta(minutes=199), {"amount": 40.0})
    assert affected_by(spec, late, history) == ["c", "d"]
    old = [9.0] * len(names)
    new = revise(spec, old, t0 + timedelta(minutes=30), [*history, late])
    assert [v for i, v in enumerate(new) if i not in entity_positions(spec)] == [9.0] * 8
    assert new[names.index("payments_1h")] == 1.0  # only a is before b within the hour
    assert status(t0, None, 60) == "missing"
    assert status(t0 + timedelta(seconds=61), t0, 60) == "expired"
    assert status(t0 + timedelta(seconds=60), t0, 60) == "present"
    assert status(t0, t0 + timedelta(seconds=1), None) == "missing"  # not known yet at t0
