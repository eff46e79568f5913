"""What every Conveyor service process shares."""

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
    "KnownProject",
    "NotInRegistry",
    "ProjectCache",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "Runtime",
    "ServiceSettings",
    "UnknownProject",
    "verify_artifact",
]
