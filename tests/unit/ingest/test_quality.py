from datetime import UTC, datetime

from conveyor_contracts.project import FieldSpec, QualityPolicy
from conveyor_examples import load_project
from conveyor_ingest.domain.quality import Checker, Profile, Tally, build_profile

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FRAUD = load_project("fraud")


def _spec(**quality):
    """The fraud project with a free-text `channel`, usual amounts up to 500, and a policy."""
    fields = dict(FRAUD.record_schema.fields)
    fields["amount"] = fields["amount"].model_copy(update={"expected_max": 500.0})
    fields["channel"] = FieldSpec(type="string", required=False)
    schema = FRAUD.record_schema.model_copy(update={"fields": fields})
    policies = FRAUD.policies.model_copy(update={"quality": QualityPolicy(**quality)})
    return FRAUD.model_copy(update={"record_schema": schema, "policies": policies})


def _record(i: int, **fields):
    base = {
        "customer": f"c-{i}",
        "amount": 40.0 + (i % 20),
        "merchant": "fuel",
        "hour": 9,
        "foreign": False,
        "channel": ["web", "app"][i % 2],
    }
    return base | fields


def test_the_profile_keeps_moments_and_the_values_of_categorical_strings():
    spec = _spec(max_categories=3)
    profile = build_profile(spec, [_record(i) for i in range(100)], NOW)
    amount = profile.fields["amount"]
    assert 49 < amount.mean < 50 and 5 < amount.std < 6
    assert profile.fields["channel"].categories == {"web", "app"}
    assert "customer" not in profile.fields  # the entity key is no category
    many = build_profile(spec, [_record(i, channel=f"x{i}") for i in range(10)], NOW)
    assert many.fields["channel"].categories is None
    assert Profile.from_json(profile.to_json()) == profile


def test_findings_name_the_field_the_check_and_why():
    spec = _spec()
    checker = Checker(spec, build_profile(spec, [_record(i) for i in range(100)], NOW))
    assert checker.findings(_record(1)) == []
    found = {(f.field, f.check): f.why for f in checker.findings(_record(1, amount=900.0))}
    assert found[("amount", "out_of_range")] == "900.0 is above the usual 500"
    assert found[("amount", "outliers")].startswith("900.0 is +")  # far from a mean near 50
    found = {(f.field, f.check) for f in checker.findings(_record(1, channel="fax"))}
    assert found == {("channel", "unseen")}


def test_without_a_profile_only_the_declared_expectations_are_checked():
    checker = Checker(_spec(), None)
    assert checker.findings(_record(1, amount=900.0, channel="fax")) == [
        checker.findings(_record(1, amount=900.0))[0]
    ]
    assert checker.findings(_record(1, amount=499.0, channel="fax")) == []


def test_a_tally_reports_shares_over_the_limits():
    spec = _spec(max_null_rate=0.2, max_outliers=0.05)
    checker = Checker(spec, build_profile(spec, [_record(i) for i in range(100)], NOW))
    tally = Tally()
    for i in range(20):
        fields = _record(i, amount=5000.0) if i < 2 else _record(i)
        if i % 2:
            fields.pop("channel")  # half the optional field is empty
        tally.add(checker, fields, checker.findings(fields), NOW, rejected=False)
    report = tally.report(checker, 3, "window")
    assert report.records == 20 and report.flagged == 2 and report.profiled
    assert report.fields["amount"].outliers == 2 and report.fields["amount"].out_of_range == 2
    assert report.fields["channel"].nulls == 10
    assert report.breaches == [
        "amount: out_of_range 10.0% > 1.0%",
        "amount: outliers 10.0% > 5.0%",
        "channel: nulls 50.0% > 20.0%",
    ]
    assert "outcome" not in report.fields  # a missing label is normal
