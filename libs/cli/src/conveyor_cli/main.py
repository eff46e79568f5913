"""`conveyor`: the user's handle on the platform (`conveyor --help`).

`main` runs the command tree under one handler: every failure is a line on stderr and an exit
code (`app.ExitCode`), never a traceback unless `--debug` (or `CONVEYOR_DEBUG=1`) asks for it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import import_module

import typer

from .app import CliError, ExitCode, Settings, app

# Each module registers its commands on `app`; `conveyor --help` lists them in this order.
COMMAND_MODULES = (
    "stack",
    "load",
    "projects",
    "aliases",
    "runs",
    "data",
    "audit",
    "tokens",
    "kube",
)
for _module in COMMAND_MODULES:
    import_module(f"{__package__}.commands.{_module}")

__all__ = ["app", "main", "run"]


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line; its exit code."""
    Settings.reset()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except typer.TyperException as exc:  # click's errors (usage: exit code 2), as Typer has them
        context = getattr(exc, "ctx", None)
        if context is not None and exc.format_message() == context.get_help():
            print(exc.format_message(), file=sys.stderr)  # no command given: the help
            return int(getattr(exc, "exit_code", ExitCode.USAGE))
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        return _fail(exc.format_message() + hint, getattr(exc, "exit_code", ExitCode.FAILED))
    except typer.Abort:
        return _fail("aborted", ExitCode.FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:
        return _fail(f"{type(exc).__name__}: {exc}", ExitCode.FAILED, unexpected=True)
    if code == ExitCode.INTERRUPTED:  # Ctrl-C, which click turns into this exit code
        return _fail("interrupted", ExitCode.INTERRUPTED)
    return code if isinstance(code, int) else ExitCode.OK


def _fail(message: str, code: int, *, unexpected: bool = False) -> int:
    if Settings.debug:
        import traceback

        traceback.print_exc()
    line = " ".join(message.split()) or "failed"
    if unexpected and not Settings.debug:
        line += " (run with --debug for the traceback)"
    print(f"error: {line}", file=sys.stderr, flush=True)
    return int(code)


def main() -> None:  # the `conveyor` console script
    sys.exit(run())


if __name__ == "__main__":
    main()
