"""Record headers as text, in each form a Kafka client hands them over."""

from __future__ import annotations

from conveyor_contracts import decode_headers


def test_utf8_values_are_read_as_text():
    raw = [("ce_id", b"abc"), ("ce_source", "conveyor/ingest ✓".encode())]
    assert decode_headers(raw) == {"ce_id": "abc", "ce_source": "conveyor/ingest ✓"}
    assert decode_headers(tuple(raw)) == decode_headers(raw)


def test_a_null_value_is_left_out_and_one_not_utf8_read_with_replacement_characters():
    raw = [("ce_id", b"abc"), ("empty", None), ("bad", b"\xff\xfeok")]
    assert decode_headers(raw) == {"ce_id": "abc", "bad": "\ufffd\ufffdok"}


def test_text_values_and_mappings_are_taken_as_they_are():
    assert decode_headers([("a", "text"), ("b", b"bytes")]) == {"a": "text", "b": "bytes"}
    assert decode_headers({"a": b"x", "n": 3, "none": None}) == {"a": "x", "n": "3"}
