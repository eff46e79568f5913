"""Where a running stack is recorded (`CONVEYOR_HOME`, default `.conveyor`) and the caller's token.

Standard library only: every `conveyor` command reads this, and the commands that only talk HTTP
should not pay for importing the services' libraries to find a URL.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

TOKENS_FILE = "tokens.json"  # what the services accept: names, roles, sha256s of tokens
ADMIN_TOKEN_FILE = "token"  # the local admin's own token, which the CLI picks up
STATE_FILE = "stack.json"
_URL_OVERRIDE = re.compile(r"CONVEYOR_([A-Z]+)_URL")


class StackError(RuntimeError):
    pass


def home() -> Path:
    """The state directory, read when asked (so that a test or a caller may point it elsewhere)."""
    return Path(os.environ.get("CONVEYOR_HOME", ".conveyor"))


STATE_DIR = home()


def local_token(state_dir: Path | None = None) -> str | None:
    """The caller's bearer token: `CONVEYOR_TOKEN`, else the local stack's admin token."""
    if token := os.environ.get("CONVEYOR_TOKEN"):
        return token
    path = (state_dir or home()) / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None


def running_stack(state_dir: Path | None = None) -> dict[str, Any]:
    """Where a running `conveyor up` listens (environment variables override the state file:
    `CONVEYOR_<SERVICE>_URL`, `KAFKA_BOOTSTRAP_SERVERS`)."""
    state: dict[str, Any] = {"services": {}, "broker": {}}
    path = (state_dir or home()) / STATE_FILE
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise StackError(f"{path} is not a stack's state ({exc}); remove it") from exc
    for key, value in os.environ.items():
        if (match := _URL_OVERRIDE.fullmatch(key)) and value:
            state["services"][match[1].lower()] = value
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        state["broker"]["bootstrap_servers"] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    if not state["services"]:
        raise StackError(
            f"no running stack (no {path}): start one with `conveyor up` (or set CONVEYOR_*_URL)"
        )
    return state
