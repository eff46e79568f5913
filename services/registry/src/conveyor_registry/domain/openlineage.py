"""A model version's lineage as OpenLineage run events (START and COMPLETE, or FAIL), built
with the OpenLineage client's own types so that any OpenLineage consumer (Marquez, DataHub, ...)
can take them: the training job, its Kafka inputs with the exact offset ranges read, and the
registered model as the output, versioned by its sha256."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    InputDatasetFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    execution_parameters_run,
    input_statistics_input_dataset,
    job_type_job,
    processing_engine_run,
    source_code_location_job,
    tags_run,
)
from openlineage.client.serde import Serde

PRODUCER = "urn:conveyor:registry"  # a URI, as OpenLineage asks; names Conveyor's registry
NAMESPACE = "conveyor"


@attr.define
class KafkaOffsetsInputDatasetFacet(InputDatasetFacet):
    """Which records of the topic were read: per partition, the first and last offset."""

    partitions: list[dict[str, int]] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return "urn:conveyor:facets:KafkaOffsetsInputDatasetFacet"  # described in docs/contracts.md


@attr.define
class ConveyorTrainingRunFacet(RunFacet):
    """What makes the run reproducible: the training set's digests and size, the code and
    the environment, and what triggered it."""

    training_rows: int = 0
    content_digest: str | None = None
    example_ids_digest: str | None = None
    boundary: dict[str, Any] | None = None
    code: dict[str, Any] = attr.field(factory=dict)
    environment: dict[str, Any] = attr.field(factory=dict)
    trigger: dict[str, Any] = attr.field(factory=dict)
    parent_version: int | None = None
    project_version: int | None = None
    features_sha256: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return "urn:conveyor:facets:ConveyorTrainingRunFacet"  # described in docs/contracts.md


def run_uuid(run_id: str) -> str:
    """OpenLineage run ids are UUIDs: the run's own when it is one, else one derived from it."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:run:{run_id}"))


def events(
    version: dict[str, Any], kafka_namespace: str, registry_url: str
) -> list[dict[str, Any]]:
    """START and COMPLETE (FAIL for a failed version) for the run that made `version`."""
    lineage = version["lineage"]
    project, number = version["project"], version["version"]
    training_set = lineage.get("training_set") or {}
    code = lineage.get("code") or {}
    run = Run(
        runId=run_uuid(version["run_id"]),
        facets={
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=(lineage.get("environment") or {}).get("sklearn", "unknown"),
                name="scikit-learn",
                openlineageAdapterVersion="conveyor",
            ),
            "executionParameters": execution_parameters_run.ExecutionParametersRunFacet(
                parameters=[
                    execution_parameters_run.ExecutionParameter(key=k, value=str(v))
                    for k, v in sorted((lineage.get("params") or {}).items())
                ]
            ),
            "tags": tags_run.TagsRunFacet(
                tags=[
                    tags_run.TagsRunFacetFields("project", project, "CONVEYOR"),
                    tags_run.TagsRunFacetFields(
                        "estimator", str(lineage.get("estimator")), "CONVEYOR"
                    ),
                    tags_run.TagsRunFacetFields("seed", str(lineage.get("seed")), "CONVEYOR"),
                ]
            ),
            "conveyor_training": ConveyorTrainingRunFacet(
                training_rows=int(training_set.get("rows", lineage.get("training_rows", 0))),
                content_digest=training_set.get("content_digest"),
                example_ids_digest=training_set.get("example_ids_digest"),
                boundary=training_set.get("boundary"),
                code=code,
                environment=lineage.get("environment") or {},
                trigger=lineage.get("trigger") or {},
                parent_version=lineage.get("parent_version"),
                project_version=lineage.get("project_version"),
                features_sha256=lineage.get("features_sha256"),
            ),
        },
    )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="CONVEYOR", jobType="TRAINING"
        )
    }
    if code.get("git_commit"):
        job_facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=code.get("git_url") or "unknown", version=code["git_commit"]
        )
    job = Job(namespace=NAMESPACE, name=f"{project}.train", facets=job_facets)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for source in training_set.get("sources", []):
        if "topic" in source:
            by_topic.setdefault(source["topic"], []).append(source)
    inputs = [
        InputDataset(
            namespace=kafka_namespace,
            name=topic,
            inputFacets={
                "kafkaOffsets": KafkaOffsetsInputDatasetFacet(
                    partitions=[
                        {
                            "partition": s["partition"],
                            "first_offset": s["first_offset"],
                            "last_offset": s["last_offset"],
                            "rows": s["rows"],
                        }
                        for s in sources
                    ]
                ),
                "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=sum(s["rows"] for s in sources)
                ),
            },
        )
        for topic, sources in sorted(by_topic.items())
    ]
    outputs = []
    if version["sha256"]:
        outputs.append(
            OutputDataset(
                namespace=registry_url,
                name=f"{project}/versions/{number}",
                facets={
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion=version["sha256"]
                    )
                },
            )
        )
    started = lineage.get("started_at") or _iso(version["created_at"])
    start = RunEvent(
        eventType=RunState.START,
        eventTime=started,
        run=run,
        job=job,
        inputs=inputs,
        outputs=[],
        producer=PRODUCER,
    )
    if version["status"] == "failed":
        end_run = Run(
            runId=run.runId,
            facets={
                "errorMessage": error_message_run.ErrorMessageRunFacet(
                    message=version["failure_reason"] or "failed", programmingLanguage="python"
                )
            },
        )
        end = RunEvent(
            eventType=RunState.FAIL,
            eventTime=_iso(version["created_at"]),
            run=end_run,
            job=Job(namespace=NAMESPACE, name=job.name),
            inputs=inputs,
            outputs=[],
            producer=PRODUCER,
        )
    else:
        end = RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=_iso(version["created_at"]),
            run=Run(runId=run.runId),
            job=Job(namespace=NAMESPACE, name=job.name),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )
    return [Serde.to_dict(start), Serde.to_dict(end)]


def _iso(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()
