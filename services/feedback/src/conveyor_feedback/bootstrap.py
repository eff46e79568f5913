from __future__ import annotations

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.repository import Repository
from .entrypoints.api import router
from .entrypoints.cors import ProjectCors
from .handlers import Feedback


class FeedbackSettings(ServiceSettings):
    http_port: int = 8107
    feedback_horizon_s: float = Field(
        600.0,
        gt=0,
        description="How long feedback waits for its prediction before it is dead-lettered.",
    )
    feedback_sweep_s: float = Field(5.0, gt=0, description="How often waiting feedback is checked.")


def bootstrap(settings: FeedbackSettings | None = None) -> Runtime:
    settings = settings or FeedbackSettings()
    runtime = Runtime(
        "feedback", settings, migrations=package_migrations("conveyor_feedback"), outbox=True
    )
    assert runtime.db is not None
    feedback = Feedback(
        runtime.projects, Repository(runtime.db), runtime.bus, settings.feedback_horizon_s
    )
    runtime.bus.consume(catalog.PREDICTIONS_RESPONSES, feedback.on_responses)
    runtime.bus.consume(catalog.FEEDBACK_SUBMITTED, feedback.on_submitted)
    runtime.http.include_router(router(feedback))

    def allowed_origins(project: str) -> list[str]:
        known = runtime.projects.get(project)
        return known.spec.feedback.allowed_origins if known is not None else []

    runtime.http.add_middleware(
        ProjectCors, path=r"/projects/(?P<project>[^/]+)/feedback", origins=allowed_origins
    )

    async def sweep() -> None:
        await feedback.sweep()

    runtime.every(settings.feedback_sweep_s, sweep, name="feedback-sweep")
    return runtime
