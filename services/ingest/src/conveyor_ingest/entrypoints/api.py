"""POST records over HTTP: the same validation as the Kafka path; a project's quality."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from conveyor_auth import Action, Principal, caller
from conveyor_contracts.events import QualityReported
from conveyor_contracts.records import ContractViolation
from conveyor_runtime import Invalid, UnknownProject, refusals

from ..handlers import Ingest


class RecordIn(BaseModel):
    record_id: str | None = Field(None, max_length=200)
    fields: dict[str, Any]


class BatchIn(BaseModel):
    records: list[RecordIn] = Field(min_length=1, max_length=10_000)


class Stored(BaseModel):
    accepted: list[str] = Field(description="Ids of records stored now.")
    duplicates: int = Field(description="Records already in the raw log (not re-emitted).")
    flagged: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Records stored now with quality findings (policy `flag`): id → findings.",
    )
    quality: QualityReported | None = Field(
        None, description="The quality of the records checked now (duplicates left out)."
    )


class Quality(BaseModel):
    profile: dict[str, Any] | None = Field(description="What the project's records look like.")
    window: QualityReported | None = Field(description="The window filling now, if any.")


class Failing(BaseModel):
    index: int = Field(description="The record's place in the request.")
    problems: list[str]


class Refused(BaseModel):
    message: str
    errors: list[Failing]


class RecordsRefused(BaseModel):
    """Records that fail their contract (or, under policy `reject`, their quality checks)."""

    detail: Refused


Submitter = Annotated[Principal, caller(Action.SUBMIT)]
# A request that does not validate, or records that do not meet the contract.
REFUSED_RECORDS: dict[int | str, dict[str, Any]] = {
    **refusals(404),
    422: {
        "model": Invalid | RecordsRefused,
        "description": "The request does not validate, or its records are refused (each with "
        "its problems).",
    },
}


def router(ingest: Ingest) -> APIRouter:
    api = APIRouter(tags=["ingest"])

    def _known(project: str):
        try:
            return ingest.projects.require(project)
        except UnknownProject as exc:
            raise HTTPException(404, detail=str(exc)) from exc

    async def _ingest(project: str, records: list[RecordIn], source: str) -> Stored:
        _known(project)
        accepted = []
        errors: list[tuple[int, list[str]]] = []  # (index in the request, problems)
        for index, record in enumerate(records):
            try:
                accepted.append(ingest.check(project, record.fields, record.record_id, source))
            except ContractViolation as exc:
                errors.append((index, exc.problems))
        if errors:
            await ingest.log.reject(
                [
                    (project, source, "; ".join(problems), records[index].fields)
                    for index, problems in errors
                ]
            )
            raise _refused(errors, len(records), "meet the data contract")
        candidates, reject = await ingest.inspect(project, [(a, source) for a in accepted])
        if reject and any(c.findings for c in candidates):
            refused = [c for c in candidates if c.findings]
            await ingest.store(project, [], refused)
            errors = [
                (i, list(map(str, c.findings))) for i, c in enumerate(candidates) if c.findings
            ]
            raise _refused(errors, len(records), "pass the project's quality checks")
        outcome = await ingest.store(project, candidates)
        stored = set(outcome.accepted)
        return Stored(
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            flagged={
                c.record.record_id: list(map(str, c.findings))
                for c in candidates
                if c.findings and c.record.record_id in stored
            },
            quality=outcome.quality,
        )

    @api.post(
        "/projects/{project}/records",
        response_model=Stored,
        status_code=201,
        responses=REFUSED_RECORDS,
    )
    async def post_record(project: str, record: RecordIn, _who: Submitter) -> Stored:
        return await _ingest(project, [record], "http")

    @api.post(
        "/projects/{project}/records/batch",
        response_model=Stored,
        status_code=201,
        responses=REFUSED_RECORDS,
    )
    async def post_batch(project: str, batch: BatchIn, _who: Submitter) -> Stored:
        """All or nothing: one record that fails its contract (or, under policy `reject`, its
        quality checks) refuses the batch, and the 422 lists every failing record."""
        return await _ingest(project, batch.records, "http")

    @api.get("/projects/{project}/records/stats")
    async def stats(project: str) -> dict[str, int]:
        return await ingest.log.counts(project)

    @api.get("/projects/{project}/quality", response_model=Quality, responses=refusals(404))
    async def quality(project: str) -> Quality:
        known = _known(project)
        checker = await ingest.watch.checker(known)
        window = ingest.watch.window(project)
        return Quality(
            profile=None if checker.profile is None else checker.profile.to_json(),
            window=window.report(checker, known.version, "window")
            if window and window.records
            else None,
        )

    @api.post("/projects/{project}/quality/profile", responses=refusals(404, 409))
    async def rebuild_profile(
        _who: Annotated[Principal, caller(Action.APPLY)],
        project: str,
        records: int = Query(1000, ge=20, le=100_000),
    ) -> dict[str, Any]:
        """Profile the project anew from its newest records (after a change the team accepts
        as the new normal)."""
        profile = await ingest.watch.rebuild(_known(project), records)
        if profile is None:
            raise HTTPException(409, detail=f"project {project!r} has too few records to profile")
        return profile.to_json()

    return api


def _refused(errors: list[tuple[int, list[str]]], total: int, what: str) -> HTTPException:
    message = (
        f"the record does not {what}"
        if total == 1
        else f"{len(errors)} of {total} records do not {what}; none of the batch was accepted"
    )
    detail = [{"index": index, "problems": problems} for index, problems in errors]
    return HTTPException(422, detail={"message": message, "errors": detail})
