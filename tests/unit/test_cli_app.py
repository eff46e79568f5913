"""The `conveyor` command tree: fast help, help on every parameter, completion, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from conveyor_auth import Role
from conveyor_cli.commands.tokens import RoleName
from conveyor_cli.main import app, run

CONVEYOR = Path(sys.executable).parent / "conveyor"
# Libraries a command may need but `--help` must not pay for.
HEAVY = ("httpx", "aiokafka", "pydantic", "numpy", "rich", "fastapi", "conveyor_contracts")


def _commands() -> list[tuple[str, Any]]:
    """Every command of the tree, with its path (`conveyor token issue`)."""
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: str) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "conveyor")
    return found


def test_the_console_script_answers_help():
    """The installed `conveyor` script itself, interpreter start included. How fast it answers
    is held down by what `--help` imports (the next test), not timed here: a busy machine's
    stall would say nothing about the command."""
    done = subprocess.run([CONVEYOR, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "Exit codes" in done.stdout


@pytest.mark.parametrize(
    ("code", "allowed"),
    [
        ("import conveyor_cli.main", set()),
        ("from conveyor_cli.main import run; run(['--help'])", set()),
        # Typer validates the values of a command line with pydantic, help flags included.
        ("from conveyor_cli.main import run; run(['train', '--help'])", {"pydantic"}),
        ("from conveyor_cli.main import run; run(['token', 'issue', '--help'])", {"pydantic"}),
    ],
)
def test_help_imports_no_heavy_library(code: str, allowed: set[str]):
    probe = f"""
import sys, io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    {code}
print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY) - allowed!r}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_every_command_and_parameter_has_help():
    missing = []
    commands = _commands()
    assert len(commands) > 25  # the tree was walked, sub-commands included
    for path, command in commands:
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if param.name == "help":
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.name}")
    assert missing == []


def test_every_command_offers_json():
    leaves = [(p, c) for p, c in _commands() if not hasattr(c, "commands")]
    without = [p for p, c in leaves if "--json" not in {o for x in c.params for o in x.opts}]
    assert without == []


def test_role_choices_are_the_auth_roles():
    assert [r.value for r in RoleName] == [r.value for r in Role]


def test_usage_errors_are_one_line_and_exit_2(capsys):
    for argv, expected in [
        (["train"], "Missing argument 'project'"),
        (["nope"], "No such command 'nope'"),
        (["train", "p", "--timeout", "0"], "--timeout"),
        (["approvals", "p", "--state", "maybe"], "--state"),
        (["token", "issue", "ana", "--role", "boss"], "'boss' is not one of"),
    ]:
        assert run(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        (line,) = captured.err.strip().splitlines()
        assert line.startswith("error: ") and expected in line, line
        assert "--help" in line  # where to look


def test_no_command_prints_the_help():
    done = subprocess.run([CONVEYOR], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Usage: conveyor" in done.stderr and "Commands:" in done.stderr


def test_shell_completion(tmp_path: Path):
    env = os.environ | {"CONVEYOR_HOME": str(tmp_path)}
    # The script for the shell it runs in (bash, here).
    shown = subprocess.run(
        ["bash", "-c", f"{CONVEYOR} --show-completion"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert "_CONVEYOR_COMPLETE=complete_bash" in shown.stdout

    def complete(words: str) -> list[str]:
        done = subprocess.run(
            [CONVEYOR],
            capture_output=True,
            text=True,
            env=env
            | {
                "_CONVEYOR_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split(" ")) - 1),
            },
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("conveyor tr") == ["train"]
    assert complete("conveyor token issue ana --role a") == ["app", "approver", "admin"]
    # Project names come from the running stack; with none, nothing (and no error).
    assert complete("conveyor train ") == []
