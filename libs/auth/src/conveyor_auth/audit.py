"""Who made a change, as the audit log records it.

An endpoint that changes something turns its caller into an `Actor` (`acting(who, action)`):
the authenticated name, the role that allowed the action, how they signed in, and the HTTP
request's id (the caller's `X-Request-ID`, else one made for the change). The change's code
writes `actor.entry(...)` in the same transaction as the change (`conveyor_db.record_audit`),
so an entry exists exactly when its change does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from conveyor_contracts.events import AuditRecorded

from .roles import Action, Principal

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's X-Request-ID may be to be recorded (else the service makes its own).
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Actor:
    name: str
    role: str = ""
    via: str = "token"
    request_id: str | None = None

    def entry(
        self,
        action: str,
        *,
        project: str | None,
        target: str = "",
        reason: str = "",
        **details: Any,
    ) -> AuditRecorded:
        return AuditRecorded(
            actor=self.name,
            role=self.role,
            via=self.via,
            action=action,
            project=project,
            target=target,
            reason=reason,
            request_id=self.request_id,
            details=details,
        )


def acting(who: Principal, action: Action) -> Actor:
    """`who` doing `action` in the current request."""
    role = who.role_for(action)
    rid = who.request_id or os.urandom(12).hex()
    return Actor(who.name, "" if role is None else str(role), who.via, rid)


def from_kafka(claimed: str) -> Actor:
    """The sender of a command read from a topic: nobody vouches for the name it gives (who may
    produce there is the cluster's ACLs), so it is recorded as a claim, `kafka:<name>`."""
    return Actor(f"kafka:{claimed}"[:200], "", "kafka", None)
