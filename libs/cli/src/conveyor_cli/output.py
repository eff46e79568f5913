"""What commands print: the result on stdout — a table, a key/value view, or JSON with `--json` —
and notes and progress on stderr, so that `conveyor … --json | jq` sees only the result.

rich loads on the first print, not with the command tree.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


# Where the output is not a terminal (a pipe, a file) rows are not wrapped to a width nobody
# sees: a table is as wide as its content, and a line holds a whole row.
UNBOUNDED_WIDTH = 10_000


@cache
def stdout() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else UNBOUNDED_WIDTH)


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def emit_json(data: Any) -> None:
    """The result as JSON (datetimes and the like as strings), on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def show(data: Mapping[str, Any], as_json: bool, *, hint: str | None = None) -> None:
    """One object: JSON, or a key/value view followed by `hint` (on stderr)."""
    if as_json:
        emit_json(data)
        return
    fields(data)
    if hint:
        note(hint)


def listing(
    items: Sequence[Any],
    columns: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
    *,
    as_json: bool,
    raw: Any = None,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """A list: JSON (`raw` if given, else the items themselves), or a table of `row(item)`."""
    if as_json:
        emit_json(items if raw is None else raw)
    else:
        table(columns, map(row, items), title=title, empty=empty)


def note(message: str) -> None:
    """A line for the person at the terminal (rich markup allowed), on stderr."""
    stderr().print(message, highlight=False, soft_wrap=True)  # the terminal wraps, not rich


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    err: bool = False,
) -> None:
    """Rows under their column names, on stdout (`err`: stderr); `empty` (on stderr) when
    there are none. On a terminal too narrow for a row, the widest cells wrap (never cut)."""
    rows = list(rows)
    if not rows:
        note(f"[dim]{empty}[/dim]")
        return
    from rich.table import Table

    view = Table(header_style="bold")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(cell(value) for value in row))
    console = stderr() if err else stdout()
    if title:
        console.print(title, style="bold", highlight=False, markup=False)
    console.print(view)


def fields(data: Mapping[str, Any], *, title: str | None = None) -> None:
    """One object as `key  value` lines (nested objects as dotted keys), on stdout."""
    from rich.text import Text

    pairs = list(flatten(data))
    width = max((len(key) for key, _ in pairs), default=0)
    console = stdout()
    if title:
        console.print(title, style="bold", highlight=False)
    for key, value in pairs:
        console.print(Text.assemble((key.ljust(width), "bold"), "  ", cell(value)))


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def cell(value: Any) -> Text:
    """A value as table text: never read as rich markup (a server's text may hold brackets)."""
    from rich.text import Text

    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan")
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return Text(", ".join(str(v) for v in value))
    if isinstance(value, dict | list):
        return Text(json.dumps(value, default=str))
    return Text(str(value))


def when(timestamp: Any) -> str:
    """An ISO timestamp to the second, as a person reads it."""
    return str(timestamp or "")[:19].replace("T", " ")


def short(identifier: Any) -> str:
    """A run's or an episode's id, as far as a person needs to tell it apart."""
    return str(identifier or "")[:8]
