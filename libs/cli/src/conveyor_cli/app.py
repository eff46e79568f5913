"""The `conveyor` Typer application, its global options, exit codes and shared parameters.

Everything `conveyor --help` loads starts here, so this module and the command modules import
only the standard library and Typer at module level; HTTP, Kafka, the contracts and rich load
inside the commands that use them (`tests/unit/test_cli_app.py` holds them to it).
"""

from __future__ import annotations

import os
from enum import IntEnum
from typing import Annotated

import typer

HELP = """Conveyor: a Kafka-native MLOps platform.

Commands that read print a table (or a key/value view) on stdout, and JSON with --json; progress
and errors go to stderr. The platform is found through CONVEYOR_* variables, else
~/.config/conveyor/config.toml, else the stack `conveyor up` started here (.conveyor/), whose
admin token calls carry unless CONVEYOR_TOKEN names someone else.

Exit codes: 0 done; 1 failed (the server refused, a run failed); 2 bad arguments; 3 no stack
reachable; 4 timed out; 130 interrupted. --debug (or CONVEYOR_DEBUG=1) shows tracebacks.
"""


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the operation was refused or did not succeed
    USAGE = 2  # bad arguments or options (as click reports them)
    UNREACHABLE = 3  # no stack recorded, or nothing answers where it was
    TIMEOUT = 4  # no answer, or no end, within the time allowed
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


class Settings:
    """Global options, set by the callback before any command runs."""

    debug = False

    @classmethod
    def reset(cls) -> None:
        cls.debug = os.environ.get("CONVEYOR_DEBUG", "").lower() in {"1", "true", "yes"}


app = typer.Typer(
    name="conveyor",
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    # Rich help costs more than the whole rest of `--help` (it imports rich's markdown and
    # traceback machinery): plain help answers at once.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"conveyor {version('conveyor-cli')}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an error (also CONVEYOR_DEBUG=1)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if debug:
        Settings.debug = True


def complete_project(incomplete: str) -> list[str]:
    """Project names from the running stack's registry, for shell completion: nothing (rather
    than a delay or an error in the shell) when no stack answers within a second."""
    import json
    import urllib.request

    from conveyor_client import Config

    try:
        config = Config.discover()
        request = urllib.request.Request(config.url("registry").rstrip("/") + "/projects")
        if token := config.token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=1.0) as answer:
            names = [p["project"] for p in json.load(answer)]
    except Exception:
        return []
    return [n for n in names if n.startswith(incomplete)]


# Parameters several commands share.
Json = Annotated[
    bool,
    typer.Option("--json", help="Print the result as JSON on stdout, for scripts."),
]
Project = Annotated[
    str,
    typer.Argument(
        help="The project's name (as `conveyor projects` lists it).",
        autocompletion=complete_project,
        show_default=False,
    ),
]
Version = Annotated[
    int, typer.Argument(help="A model version number of the project.", min=1, show_default=False)
]
Alias = Annotated[
    str, typer.Option("--alias", "-a", help="The alias: a name that points at a version.")
]
Wait = Annotated[
    bool,
    typer.Option("--wait", "-w", help="Follow the run(s) until they end; exit 0 only on success."),
]
Timeout = Annotated[
    float,
    typer.Option(help="With --wait: give up after this many seconds (exit 4).", min=1),
]
Reason = Annotated[
    str, typer.Option("--reason", "-r", help="Why: recorded with the change, for the audit trail.")
]
