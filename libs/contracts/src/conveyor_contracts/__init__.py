"""Conveyor's contracts: model projects, events, the topic catalog and the envelope."""

from . import events
from .catalog import CATALOG, CONSOLE, DLQ_SUFFIX, SERVICES, TopicSpec, by_name
from .envelope import (
    DEADLINE,
    FORWARDED_HEADERS,
    REPLY_TO,
    TRACE_HEADERS,
    Envelope,
    decode_headers,
    envelope_for,
    reply_refusal,
    shared_headers,
)
from .project import ModelProject
from .records import MAX_ID_LENGTH, Contract, ContractViolation, contract_of

__all__ = [
    "CATALOG",
    "CONSOLE",
    "DEADLINE",
    "DLQ_SUFFIX",
    "FORWARDED_HEADERS",
    "MAX_ID_LENGTH",
    "REPLY_TO",
    "SERVICES",
    "TRACE_HEADERS",
    "Contract",
    "ContractViolation",
    "Envelope",
    "ModelProject",
    "TopicSpec",
    "by_name",
    "contract_of",
    "decode_headers",
    "envelope_for",
    "events",
    "reply_refusal",
    "shared_headers",
]
