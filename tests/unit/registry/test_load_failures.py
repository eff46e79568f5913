from datetime import UTC, datetime

import pytest

from conveyor_registry.domain.load_failures import check_loadable
from conveyor_registry.domain.model import Conflict


def _failure(replica: str, reason: str) -> dict:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "alias": "champion",
        "sha256": "ab",
        "reason": reason,
        "replica": replica,
        "occurred_at": at,
    }


def test_a_version_with_a_reported_load_failure_is_refused_naming_the_newest():
    check_loadable("fraud", 2, [])  # nothing reported: it may move
    with pytest.raises(Conflict) as refused:
        check_loadable("fraud", 2, [_failure("a/1", "old"), _failure("b/2", "onnx refused it")])
    assert "version 2 of 'fraud' failed to load" in str(refused.value)
    assert "b/2" in str(refused.value) and "onnx refused it" in str(refused.value)
