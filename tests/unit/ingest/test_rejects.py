"""A reject is storable whatever it holds: strict JSON without NUL, bounded in size."""

from __future__ import annotations

import json

from conveyor_ingest.adapters.repository import (
    MAX_PAYLOAD_BYTES,
    MAX_REASON,
    _text,
    storable,
)


def _jsonb_takes(value: object) -> str:
    """What Postgres's jsonb refuses: NaN and infinities, NUL anywhere, text not UTF-8."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    assert "\\u0000" not in text and "\x00" not in text
    text.encode()  # a lone surrogate would raise here
    return text


def test_nan_infinity_nul_and_surrogates_are_replaced():
    payload = {
        "amount": float("nan"),
        "ratio": [float("inf"), float("-inf"), 1.5],
        "note": "a\x00b",
        "bad\x00key": {"deep\ud800": "x\udfffy"},
        "ok": True,
        "none": None,
        "count": 10**400,
        "huge": 10**5000,
    }
    clean = storable(payload)
    _jsonb_takes(clean)
    assert isinstance(clean, dict)
    assert clean["amount"] == "NaN" and clean["ratio"] == ["Infinity", "-Infinity", 1.5]
    assert clean["note"] == "a\ufffdb" and clean["bad\ufffdkey"] == {"deep\ufffd": "x\ufffdy"}
    assert clean["count"] == 10**400  # jsonb's numeric carries it
    assert clean["huge"] == "an integer of about 5001 digits"
    assert clean["ok"] is True and clean["none"] is None


def test_a_large_payload_is_kept_as_the_start_of_its_text():
    payload = {"customer": "c" * 200_000, "amount": float("nan")}
    clean = storable(payload)
    assert isinstance(clean, dict) and clean["truncated"] is True
    assert clean["bytes"] > 200_000 and clean["text"].startswith('{"customer": "ccc')
    assert len(_jsonb_takes(clean).encode()) <= MAX_PAYLOAD_BYTES
    # multi-byte characters are not cut in the middle
    wide = storable({"x": "é" * 100_000})
    assert isinstance(wide, dict) and len(_jsonb_takes(wide).encode()) <= MAX_PAYLOAD_BYTES


def test_deep_and_odd_payloads():
    deep: object = "x\x00"
    for _ in range(500):
        deep = [deep]
    _jsonb_takes(storable(deep))
    _jsonb_takes(storable(("a", b"bytes\x00", {1, 2})))
    assert storable("plain") == "plain" and storable(None) is None


def test_a_reason_is_bounded_and_free_of_nul():
    reason = _text("customer: 'x\x00" + "y" * 50_000, MAX_REASON)
    assert len(reason) <= MAX_REASON + 40 and "\x00" not in reason
    assert reason.endswith("more characters]")
    assert _text("short", MAX_REASON) == "short"
