"""Ingest on the real broker and Postgres: Kafka and HTTP paths, dead letters, duplicates."""

from __future__ import annotations

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordAccepted, RecordSubmitted
from conveyor_contracts.project import FieldSpec, FieldType, QualityPolicy
from conveyor_ingest.adapters.repository import RawLog
from conveyor_ingest.bootstrap import IngestSettings, bootstrap
from tests.support import Kafka, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration

GOOD = {
    "customer": "c-1",
    "ts": "2026-01-01T10:00:00+00:00",
    "amount": 12.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
    "outcome": "legit",
}


async def test_records_over_kafka_and_http(kafka, database_url):
    spec = unique_project("ing")
    name = spec.name
    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project to be known")
        first = RecordSubmitted(project=name, record_id="r-1", fields=GOOD)
        await k.send(catalog.RECORDS_SUBMITTED, first, key="c-1")
        await k.send(catalog.RECORDS_SUBMITTED, first, key="c-1")  # a duplicate
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(
                project=name, record_id="r-bad", fields=GOOD | {"amount": -5, "merchant": "casino"}
            ),
            key="c-1",
        )
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project="no-such-project", fields=GOOD),
            key="c-1",
        )
        await k.send_raw(catalog.RECORDS_SUBMITTED.name, b'{"project": ', key="c-9")
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project=name, record_id="r-2", fields=GOOD | {"customer": "c-2"}),
            key="c-2",
        )

        r = await api.post(f"/projects/{name}/records", json={"fields": GOOD | {"amount": 7.0}})
        assert r.status_code == 201 and len(r.json()["accepted"]) == 1
        again = await api.post(f"/projects/{name}/records", json={"fields": GOOD | {"amount": 7.0}})
        assert again.json()["accepted"] == [] and again.json()["duplicates"] == 1
        r = await api.post(
            f"/projects/{name}/records/batch",
            json={
                "records": [
                    {"fields": GOOD | {"amount": 8.0}},
                    {"fields": GOOD | {"hour": 30}},
                    {"fields": GOOD | {"foreign": "yes", "merchant": "casino"}},
                ]
            },
        )
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "2 of 3 records" in detail["message"] and "none of the batch" in detail["message"]
        assert detail["errors"][0] == {"index": 1, "problems": ["hour: 30 is above the maximum 23"]}
        assert len(detail["errors"][1]["problems"]) == 2
        r = await api.post("/projects/nope/records", json={"fields": GOOD})
        assert r.status_code == 404 and "unknown project 'nope'" in r.text
        r = await api.post(
            f"/projects/{name}/records",
            content=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422

        accepted = await k.collect(
            catalog.RECORDS_ACCEPTED.name,
            lambda e: e.project == name,
            3,
            decode=catalog.RECORDS_ACCEPTED,
        )
        assert sorted(e.record_id for e in accepted if e.record_id.startswith("r-")) == [
            "r-1",
            "r-2",
        ]
        assert all(isinstance(e, RecordAccepted) and e.project_version == 1 for e in accepted)
        dead = await k.collect(
            catalog.RECORDS_SUBMITTED.dlq, lambda r: r.key in (b"c-1", b"c-9"), 3
        )
        reasons = [headers_of(d)["dlq_error"] for d in dead]
        assert any(
            "amount: -5 is below the minimum 0" in x and "merchant: 'casino'" in x for x in reasons
        )
        assert any("unknown project 'no-such-project'" in x for x in reasons)
        assert any(
            headers_of(d)["dlq_stage"] == "decode" and d.value == b'{"project": ' for d in dead
        )
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["accepted"] == 3 and stats["duplicates"] == 2

        # Nothing more than one event per stored record, even after the duplicates.
        async def owed_none() -> bool:
            return await runtime.db.pool.fetchval("SELECT count(*) FROM announcements") == 0

        await until(owed_none)
        mine = f'"project":"{name}"'.encode()
        with pytest.raises(AssertionError, match="found 3 of 4"):  # no fourth in 2 s
            await k.collect(catalog.RECORDS_ACCEPTED.name, lambda r: mine in r.value, 4, 2)


def _quality_project(on_finding: str):
    spec = unique_project("qual")
    fields = dict(spec.record_schema.fields)
    fields["amount"] = fields["amount"].model_copy(update={"expected_max": 500.0})
    quality = QualityPolicy(
        on_finding=on_finding, window=50, min_batch=10, profile_records=40, max_outliers=0.05
    )
    return spec.model_copy(
        update={
            "record_schema": spec.record_schema.model_copy(update={"fields": fields}),
            "policies": spec.policies.model_copy(update={"quality": quality}),
        }
    )


def _normal(i: int) -> dict:
    return GOOD | {"customer": f"c-{i % 7}", "amount": 20.0 + i % 30, "hour": i % 24}


async def test_quality_is_flagged_or_refused_as_the_project_chooses(kafka, database_url):
    spec = _quality_project("flag")
    name = spec.name
    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project to be known")
        batch = [{"record_id": f"n-{i}", "fields": _normal(i)} for i in range(60)]
        r = await api.post(f"/projects/{name}/records/batch", json={"records": batch})
        assert r.status_code == 201 and r.json()["flagged"] == {}
        assert r.json()["quality"]["breaches"] == [] and not r.json()["quality"]["profiled"]
        profile = (await api.get(f"/projects/{name}/quality")).json()["profile"]
        assert profile["records"] == 40 and 30 < profile["fields"]["amount"]["mean"] < 40

        # Policy `flag`: stored and announced with the findings; the batch is over its limit.
        odd = [{"record_id": f"o-{i}", "fields": _normal(i) | {"amount": 5000.0}} for i in range(4)]
        batch = [{"record_id": f"m-{i}", "fields": _normal(i)} for i in range(16)] + odd
        r = await api.post(f"/projects/{name}/records/batch", json={"records": batch})
        body = r.json()
        assert r.status_code == 201 and len(body["accepted"]) == 20
        assert sorted(body["flagged"]) == ["o-0", "o-1", "o-2", "o-3"]
        assert any(f.startswith("amount: outliers: 5000.0 is +") for f in body["flagged"]["o-0"])
        assert "amount: outliers 20.0% > 5.0%" in body["quality"]["breaches"]
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project=name, record_id="k-odd", fields=_normal(1) | {"amount": 900.0}),
            key="c-1",
        )
        flagged = await k.collect(
            catalog.RECORDS_ACCEPTED.name,
            lambda e: e.project == name and e.record_id == "k-odd",
            1,
            decode=catalog.RECORDS_ACCEPTED,
        )
        assert "amount: out_of_range: 900.0 is above the usual 500" in flagged[0].flags
        reports = await k.collect(
            catalog.QUALITY_REPORTS.name,
            lambda e: e.project == name,
            2,
            decode=catalog.QUALITY_REPORTS,
        )
        window, over = sorted(reports, key=lambda e: e.scope, reverse=True)
        assert (window.scope, window.records, window.breaches) == ("window", 50, [])
        assert over.scope == "batch" and over.records == 20 and over.fields["amount"].outliers == 4
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["flagged"] == 5 and stats["accepted"] == 81

        # Policy `reject`: refused with every finding, over HTTP and Kafka alike.
        await k.apply(_quality_project("reject").model_copy(update={"name": name}), version=2)
        await until(lambda: runtime.projects.get(name).version == 2, what="version 2")
        r = await api.post(
            f"/projects/{name}/records", json={"fields": _normal(2) | {"amount": 800.0}}
        )
        assert r.status_code == 422
        problems = r.json()["detail"]["errors"][0]["problems"]
        assert problems[0] == "amount: out_of_range: 800.0 is above the usual 500"
        assert problems[1].startswith("amount: outliers: 800.0 is +")
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project=name, record_id="k-bad", fields=_normal(3) | {"amount": 700.0}),
            key="c-3",
        )
        dead = await k.collect(
            catalog.RECORDS_SUBMITTED.dlq, lambda d: headers_of(d).get("dlq_stage") == "quality", 1
        )
        assert (
            "quality: amount: out_of_range: 700.0 is above the usual 500"
            in headers_of(dead[0])["dlq_error"]
        )
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["rejected_quality"] == 2 and stats["accepted"] == 81


def _free_project():
    """The fraud project with a free-text entity key and note, and records up to 64 KiB: what
    the contract itself holds beyond a project's own constraints."""
    spec = unique_project("edge")
    fields = spec.record_schema.fields | {
        "customer": FieldSpec(type=FieldType.STRING),
        "note": FieldSpec(type=FieldType.STRING, required=False),
    }
    schema = spec.record_schema.model_copy(update={"fields": fields, "max_bytes": 65_536})
    return spec.model_copy(update={"record_schema": schema})


def _json(project: str, record_id: str, fields: str) -> bytes:
    """A RecordSubmitted written by hand: the fields are JSON text as a producer may send it."""
    return f'{{"project":"{project}","record_id":"{record_id}","fields":{fields}}}'.encode()


GOOD_JSON = (
    '"customer":"c-1","ts":"2026-01-01T10:00:00+00:00","amount":12.5,"merchant":"fuel",'
    '"hour":9,"foreign":false'
)


async def test_poison_records_are_dead_lettered_and_the_records_after_them_stored(
    kafka, database_url
):
    """Each of these stopped ingest's consumer for good: a value that crashed the checks, or
    that the checks accepted and Postgres then refused (in the raw log or among the rejects)."""
    spec = _free_project()
    name = spec.name
    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    poison = {
        "p-ts": ('{"customer":"c-1","ts":1e30,' + GOOD_JSON.split(",", 2)[2] + "}", "ts: 1e+30"),
        "p-nan": ("{" + GOOD_JSON.replace("12.5", "NaN") + "}", "amount: nan is not a finite"),
        "p-nul": ("{" + GOOD_JSON + ',"note":"a\\u0000b"}', "note: contains a NUL character"),
        "p-key": (
            "{" + GOOD_JSON.replace('"c-1"', '"' + "c" * 16_384 + '"') + "}",
            "customer: 16384 characters is over the limit of 200",
        ),
        "p-int": (
            "{" + GOOD_JSON.replace("12.5", "1" + "0" * 400) + "}",
            "amount: an integer of about 401 digits is beyond the limit",
        ),
        "p-name": ("{" + GOOD_JSON + ',"x\\u0000":NaN}', "'x\\x00': not a field of project"),
        "p-ctl": ("{" + GOOD_JSON.replace('"c-1"', '"c-1\\n"') + "}", "a control character"),
    }
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project to be known")
        envelope = RecordSubmitted(project=name, fields={})
        for record_id, (fields, _) in poison.items():
            await k.send_json(
                catalog.RECORDS_SUBMITTED, envelope, _json(name, record_id, fields), "c-1"
            )
        await k.send_json(
            catalog.RECORDS_SUBMITTED,
            envelope,
            _json(name, "r\\u0000", "{" + GOOD_JSON + "}"),
            "c-1",
        )
        await k.send_json(
            catalog.RECORDS_SUBMITTED,
            envelope,
            _json("no-such\\u0000project", "p-project", '{"a":NaN}'),
            "c-1",
        )
        for i in range(2):
            await k.send(
                catalog.RECORDS_SUBMITTED,
                RecordSubmitted(
                    project=name, record_id=f"after-{i}", fields=GOOD | {"note": "a\tb"}
                ),
                key="c-1",
            )

        accepted = await k.collect(
            catalog.RECORDS_ACCEPTED.name,
            lambda e: e.project == name,
            2,
            decode=catalog.RECORDS_ACCEPTED,
        )
        assert sorted(e.record_id for e in accepted) == ["after-0", "after-1"]
        dead = await k.collect(
            catalog.RECORDS_SUBMITTED.dlq,
            lambda r: name.encode() in r.value or b'"p-project"' in r.value,
            9,
        )
        reasons = {
            next(
                rid for rid in [*poison, "r\\u0000", "p-project"] if f'"{rid}"'.encode() in d.value
            ): (headers_of(d)["dlq_error"])
            for d in dead
        }
        for record_id, (_, expected) in poison.items():
            assert expected in reasons[record_id], (record_id, reasons[record_id])
        assert "record_id: contains a control character ('\\x00')" in reasons["r\\u0000"]
        # A project name with a control character is no event of ours: refused as it is read.
        assert "project: Value error, contains a control character" in reasons["p-project"]
        stages = {rid: headers_of(d)["dlq_stage"] for rid, d in zip(reasons, dead, strict=True)}
        assert stages.pop("p-project") == "decode"
        assert set(stages.values()) == {"validate"}

        # Every reject is kept, storable: no NUL, no NaN, bounded.
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["rejected"] == 8 and stats["accepted"] == 2
        kept = await runtime.db.pool.fetch(
            "SELECT project, reason, payload::text AS payload FROM rejects WHERE project = $1",
            name,
        )
        assert len(kept) == 8  # the ninth never reached ingest's checks (refused as read)
        assert all("\x00" not in r["reason"] and "\\u0000" not in r["payload"] for r in kept)
        assert any('"amount": "NaN"' in r["payload"] for r in kept)
        assert any('"x\ufffd": "NaN"' in r["payload"] for r in kept)

        # The same over HTTP (whose JSON parser takes NaN and lone surrogates as well).
        for text in (
            "{" + GOOD_JSON.replace("12.5", "NaN") + "}",
            "{" + GOOD_JSON + ',"note":"\\ud800"}',
            "{" + GOOD_JSON + ',"note":"\\u0000"}',
        ):
            r = await api.post(
                f"/projects/{name}/records",
                content=f'{{"fields":{text}}}'.encode(),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422, r.text
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["rejected"] == 11


async def test_record_ids_are_unique_per_project(kafka, database_url):
    """Two projects' producers may use the same record id: each is stored and announced in its
    project, with its own event id, and a sweep rebuilds each one's announcement."""
    first, second = unique_project("ida"), unique_project("idb")
    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        for spec in (first, second):
            await k.apply(spec)
        await until(
            lambda: runtime.projects.get(first.name) and runtime.projects.get(second.name),
            what="both projects",
        )
        for spec in (first, second):
            await k.send(
                catalog.RECORDS_SUBMITTED,
                RecordSubmitted(project=spec.name, record_id="same", fields=GOOD),
                key="c-1",
            )
        r = await api.post(
            f"/projects/{first.name}/records", json={"record_id": "http", "fields": GOOD}
        )
        assert r.json()["accepted"] == ["http"]
        r = await api.post(
            f"/projects/{second.name}/records", json={"record_id": "http", "fields": GOOD}
        )
        assert r.json()["accepted"] == ["http"]  # not a duplicate of the first project's
        names = {first.name, second.name}
        raw = await k.collect(
            catalog.RECORDS_ACCEPTED.name,
            lambda r: any(n.encode() in r.value for n in names),
            4,
        )
        events = [catalog.RECORDS_ACCEPTED.adapter.validate_json(r.value) for r in raw]
        assert sorted((e.project, e.record_id) for e in events) == sorted(
            (n, rid) for n in names for rid in ("same", "http")
        )
        ids = {headers_of(r)["ce_id"] for r in raw}
        assert len(ids) == 4
        async with runtime.db.pool.acquire() as con:
            rebuilt = await RawLog(runtime.db).rebuild(
                con, [(first.name, "same"), (second.name, "same"), (second.name, "nothing")]
            )
        assert [dict(m[2])["ce_id"].decode() for m in rebuilt] == [
            headers_of(r)["ce_id"]
            for n in (first.name, second.name)
            for r in raw
            if n.encode() in r.value and b'"same"' in r.value
        ]
