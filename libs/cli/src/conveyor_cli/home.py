"""Where `conveyor up` records the stack it runs (`CONVEYOR_HOME`, default `.conveyor`): the
state file and the token files. Commands against a stack find it as the client library does
(`api.config`), which also reads this folder.

Standard library only: `conveyor up` and `conveyor token` read this before anything heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

TOKENS_FILE = "tokens.json"  # what the services accept: names, roles, sha256s of tokens
ADMIN_TOKEN_FILE = "token"  # the local admin's own token, which the CLI picks up
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    pass


def home() -> Path:
    """The state directory, read when asked (so that a test or a caller may point it elsewhere)."""
    return Path(os.environ.get("CONVEYOR_HOME", ".conveyor"))


STATE_DIR = home()
