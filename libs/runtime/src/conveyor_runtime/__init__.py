"""What every Conveyor service process shares."""

from .http import Invalid, Refusal, refusals
from .projects import KnownProject, ProjectCache, UnknownProject
from .registry import (
    SHA256_HEADER,
    ArtifactMismatch,
    NotInRegistry,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    verify_artifact,
)
from .runtime import Runtime
from .settings import ServiceSettings

__all__ = [
    "SHA256_HEADER",
    "ArtifactMismatch",
    "Invalid",
    "KnownProject",
    "NotInRegistry",
    "ProjectCache",
    "Refusal",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "Runtime",
    "ServiceSettings",
    "UnknownProject",
    "refusals",
    "verify_artifact",
]
