"""Conveyor's contracts: model projects, events, the topic catalog and the envelope."""

from . import events
from .catalog import CATALOG, DLQ_SUFFIX, SERVICES, TopicSpec, by_name
from .envelope import Envelope, decode_headers, envelope_for
from .project import ModelProject

__all__ = [
    "CATALOG",
    "DLQ_SUFFIX",
    "SERVICES",
    "Envelope",
    "ModelProject",
    "TopicSpec",
    "by_name",
    "decode_headers",
    "envelope_for",
    "events",
]
