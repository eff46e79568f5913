"""What every Conveyor service process shares."""

from .projects import KnownProject, ProjectCache, UnknownProject
from .runtime import Runtime
from .settings import ServiceSettings

__all__ = ["KnownProject", "ProjectCache", "Runtime", "ServiceSettings", "UnknownProject"]
