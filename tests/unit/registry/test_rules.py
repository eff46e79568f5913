import pytest

from conveyor_registry.domain.model import (
    Conflict,
    RegisterVersion,
    check_registration,
    rollback_target,
    spec_digest,
    valid_alias,
)


def test_spec_digest_ignores_key_order():
    assert spec_digest({"a": 1, "b": [1, 2]}) == spec_digest({"b": [1, 2], "a": 1})
    assert spec_digest({"a": 1}) != spec_digest({"a": 2})


def test_rollback_goes_to_the_version_before_the_last_move():
    assert rollback_target([(None, 1), (1, 2), (2, 3)]) == 2
    with pytest.raises(Conflict):
        rollback_target([])
    with pytest.raises(Conflict):
        rollback_target([(None, 1)])


def test_alias_names():
    assert valid_alias("champion") and valid_alias("canary-2")
    assert not valid_alias("Champion") and not valid_alias("-x") and not valid_alias("a" * 40)


def test_a_ready_version_needs_an_artifact_and_a_failed_one_a_reason():
    with pytest.raises(Conflict):
        check_registration(RegisterVersion(run_id="r", project_version=1, status="ready"))
    with pytest.raises(Conflict):
        check_registration(RegisterVersion(run_id="r", project_version=1, status="failed"))
    check_registration(
        RegisterVersion(
            run_id="r", project_version=1, status="failed", failure_reason="onnx mismatch"
        )
    )
