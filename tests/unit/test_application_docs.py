"""docs/applications.md stays true: each example payload is an event its topic's contract
accepts (records and requests also meet the `fraud` project's data contract), and the header
tables name every header the platform's envelope sets."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor_contracts import CATALOG, catalog, envelope_for
from conveyor_contracts.envelope import DEADLINE, REPLY_TO, TRACE_HEADERS
from conveyor_contracts.records import contract_of
from conveyor_examples import load_project

PAGE = Path(__file__).resolve().parents[2] / "docs" / "applications.md"
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```json\n(.*?)```", re.S)


def _examples() -> list[tuple[str, dict]]:
    return [(topic, json.loads(body)) for topic, body in EXAMPLE.findall(PAGE.read_text())]


def test_the_page_shows_every_topic_an_application_writes_or_reads():
    shown = {topic for topic, _ in _examples()}
    assert shown == {
        catalog.RECORDS_SUBMITTED.name,
        catalog.PREDICTIONS_REQUESTS.name,
        catalog.PREDICTIONS_RESPONSES.name,
        catalog.FEEDBACK_SUBMITTED.name,
        catalog.FEEDBACK_RECORDED.name,
    }


@pytest.mark.parametrize(
    "topic, payload", _examples(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_each_example_is_an_event_of_its_topic(topic, payload):
    spec = next(s for s in CATALOG if s.name == topic)
    event = spec.adapter.validate_python(payload)
    # Nothing in the example is ignored or defaulted away: it says what the contract reads.
    assert event.model_dump(mode="json", include=set(payload)).keys() == payload.keys()


def test_the_example_record_and_request_meet_the_projects_data_contract():
    contract = contract_of(load_project("fraud"))
    examples = dict(_examples())
    record = examples[catalog.RECORDS_SUBMITTED.name]
    contract.validate(
        record["fields"], record_id=record["record_id"], source="docs", now=datetime.now(UTC)
    )
    contract.check_request(examples[catalog.PREDICTIONS_REQUESTS.name]["fields"])


def test_the_header_tables_name_every_header_the_envelope_sets():
    page = PAGE.read_text()
    event = catalog.PREDICTIONS_REQUESTS.schema(project="fraud", fields={"customer": "c-1"})
    headers = envelope_for(catalog.PREDICTIONS_REQUESTS, event, source="docs").to_headers()
    for name in [*headers, *TRACE_HEADERS[:1], DEADLINE, REPLY_TO]:
        assert f"| `{name}` |" in page, name
    assert f"`{catalog.PREDICTIONS_REQUESTS.dataschema}`" in page
