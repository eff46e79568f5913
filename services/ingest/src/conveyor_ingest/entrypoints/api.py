"""POST records over HTTP: the same validation as the Kafka path."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from conveyor_runtime import UnknownProject

from ..domain.contract import ContractViolation
from ..handlers import Ingest


class RecordIn(BaseModel):
    record_id: str | None = Field(None, max_length=200)
    fields: dict[str, Any]


class BatchIn(BaseModel):
    records: list[RecordIn] = Field(min_length=1, max_length=10_000)


class Stored(BaseModel):
    accepted: list[str] = Field(description="Ids of records stored now.")
    duplicates: int = Field(description="Records already in the raw log (not re-emitted).")


def router(ingest: Ingest) -> APIRouter:
    api = APIRouter(tags=["ingest"])

    async def _ingest(project: str, records: list[RecordIn], source: str) -> Stored:
        accepted = []
        errors: list[tuple[int, list[str]]] = []  # (index in the request, problems)
        for index, record in enumerate(records):
            try:
                accepted.append(ingest.check(project, record.fields, record.record_id, source))
            except UnknownProject as exc:
                raise HTTPException(404, detail=str(exc)) from exc
            except ContractViolation as exc:
                errors.append((index, exc.problems))
        if errors:
            await ingest.log.reject(
                [
                    (project, source, "; ".join(problems), records[index].fields)
                    for index, problems in errors
                ]
            )
            message = (
                "the record does not meet the data contract"
                if len(records) == 1
                else f"{len(errors)} of {len(records)} records do not meet the data contract; "
                "none of the batch was accepted"
            )
            detail = [{"index": index, "problems": problems} for index, problems in errors]
            raise HTTPException(422, detail={"message": message, "errors": detail})
        outcome = await ingest.store(project, accepted, [source] * len(accepted))
        return Stored(accepted=outcome.accepted, duplicates=outcome.duplicates)

    @api.post("/projects/{project}/records", response_model=Stored, status_code=201)
    async def post_record(project: str, record: RecordIn) -> Stored:
        return await _ingest(project, [record], "http")

    @api.post("/projects/{project}/records/batch", response_model=Stored, status_code=201)
    async def post_batch(project: str, batch: BatchIn) -> Stored:
        return await _ingest(project, batch.records, "http")

    @api.get("/projects/{project}/records/stats")
    async def stats(project: str) -> dict[str, int]:
        return await ingest.log.counts(project)

    return api
