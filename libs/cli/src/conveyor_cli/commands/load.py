"""Data in: `ingest` loads a file of records, `sample` writes an example project's records."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from .. import output
from ..app import CliError, ExitCode, Json, Project, app

if TYPE_CHECKING:
    from conveyor_client import Record

MAX_REASONS = 10  # distinct refusal reasons worth a line each; the rest are counted
MAX_LINES_SHOWN = 5  # line numbers shown per reason


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


@dataclass
class Tally:
    """What became of a file's records, with the line each refused one was on."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    flagged: int = 0
    queued: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)  # {line, record_id, problems}

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": len(self.refused),
            "flagged": self.flagged,
            "queued": self.queued,
            "refusals": self.refused,
        }


@dataclass(frozen=True)
class Line:
    number: int  # in the file, 1-based (a CSV's header is line 1)
    record: Record | None
    problem: str | None = None  # why the line is no record at all


def _format(path: str, given: Format | None) -> Format:
    if given is not None:
        return given
    if path.endswith(".csv"):
        return Format.csv
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return Format.jsonl
    raise CliError(
        f"cannot tell the format of {path!r}: name it .csv or .jsonl, or say --format",
        ExitCode.USAGE,
    )


def _lines(stream: TextIO, kind: Format, types: dict[str, str], id_column: str) -> Iterator[Line]:
    """Each record of the file (a CSV row typed by the project's schema, or a JSON object per
    line), its id taken from `id_column` when the schema has no field of that name."""
    import csv
    import json

    from conveyor_client import Record

    from ..values import row

    takes_id = id_column not in types
    if kind is Format.csv:
        reader = csv.DictReader(stream)
        for values in reader:
            number = reader.line_num
            try:
                fields = row(values, types)
            except CliError as exc:
                yield Line(number, None, str(exc))
                continue
            record_id = fields.pop(id_column, None) if takes_id else None
            yield Line(number, Record(fields, None if record_id is None else str(record_id)))
        return
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
        except ValueError as exc:
            yield Line(number, None, f"not JSON: {exc}")
            continue
        if not isinstance(fields, dict):
            yield Line(number, None, "not a JSON object")
            continue
        record_id = fields.pop(id_column, None) if takes_id else None
        yield Line(number, Record(fields, None if record_id is None else str(record_id)))


def _batches(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@app.command()
def ingest(
    project: Project,
    file: Annotated[
        str,
        typer.Argument(
            help="A CSV file (a header row naming the fields) or JSON Lines (an object per "
            "line); `-` reads standard input.",
            show_default=False,
        ),
    ],
    format: Annotated[
        Format | None,
        typer.Option(help="csv or jsonl; default: from the file's name.", show_default=False),
    ] = None,
    id_column: Annotated[
        str,
        typer.Option(
            help="The column (or key) holding each record's own id, which makes loading the "
            "file again harmless; unless the project has a field of that name."
        ),
    ] = "record_id",
    batch_size: Annotated[
        int, typer.Option(help="Records per request to ingest.", min=1, max=10_000)
    ] = 500,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Produce the records to records.submitted instead of posting them: ingest "
            "judges them later, so refusals are not reported here.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Load records from a file into a project, with a progress bar and a summary.

    CSV values are made the types the project declares; an empty cell is a value left out.
    Each record is checked against the project's data contract: the summary counts those
    accepted, those already stored (duplicates) and those refused, with the reasons. Exit 1
    when any record was refused.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..api import platform
    from ..values import field_types

    kind = _format(file, format)
    tally = Tally()
    with platform() as conveyor:
        types = field_types(conveyor.project(project)["spec"])
        stream = sys.stdin if file == "-" else _open(file)
        console = output.stderr()
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,  # the summary follows: the bar has done its job
            disable=not console.is_terminal,  # a log or a pipe gets the summary only
        )
        with stream, progress:
            task = progress.add_task(f"ingesting into {project}", total=None)
            for batch in _batches(_lines(stream, kind, types, id_column), batch_size):
                records = [x for x in batch if x.record is not None]
                tally.read += len(batch)
                for x in batch:
                    if x.record is None:
                        tally.refused.append(
                            {"line": x.number, "record_id": None, "problems": [x.problem]}
                        )
                if records:
                    done = conveyor.submit_records(
                        project,
                        [x.record for x in records if x.record is not None],
                        via="kafka" if kafka else "http",
                        batch_size=batch_size,
                    )
                    tally.accepted += len(done.accepted)
                    tally.duplicates += done.duplicates
                    tally.flagged += len(done.flagged)
                    tally.queued += done.queued
                    for refusal in done.refused:
                        line = records[refusal.index]
                        tally.refused.append(
                            {
                                "line": line.number,
                                "record_id": refusal.record_id,
                                "problems": refusal.problems,
                            }
                        )
                progress.update(task, advance=len(batch))
    _report(tally, as_json)


def _open(path: str) -> TextIO:
    try:
        return Path(path).open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", ExitCode.USAGE) from exc


def _report(tally: Tally, as_json: bool) -> None:
    if as_json:
        output.emit_json(tally.summary())
    else:
        counts = {k: v for k, v in tally.summary().items() if k != "refusals"}
        output.fields({k: v for k, v in counts.items() if v or k in ("read", "refused")})
        reasons: Counter[str] = Counter()
        lines: dict[str, list[int]] = {}
        for refusal in tally.refused:
            for problem in refusal["problems"]:
                reasons[problem] += 1
                lines.setdefault(problem, []).append(refusal["line"])
        if reasons:
            rows = [
                (n, reason, ", ".join(map(str, lines[reason][:MAX_LINES_SHOWN])))
                for reason, n in reasons.most_common(MAX_REASONS)
            ]
            output.table(("records", "refused because", "lines"), rows, title="refusals")
            if len(reasons) > MAX_REASONS:
                output.note(f"and {len(reasons) - MAX_REASONS} more reasons (--json lists all)")
    if tally.refused:
        raise CliError(f"{len(tally.refused)} of {tally.read} records refused")


@app.command()
def sample(
    name: Annotated[
        str,
        typer.Argument(help="A bundled example project: fraud or wine.", show_default=False),
    ],
    records: Annotated[int, typer.Option(help="How many records.", min=1, max=1_000_000)] = 2000,
    seed: Annotated[
        int, typer.Option(help="The generator's seed: the same seed, the same data.")
    ] = 0,
    format: Annotated[Format, typer.Option(help="csv or jsonl.")] = Format.csv,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines (the same as --format jsonl).")
    ] = False,
) -> None:
    """Write labeled records of a bundled example project to stdout, the newest now: data to
    try `conveyor ingest` with (`conveyor sample fraud > payments.csv`)."""
    import csv
    import json

    from conveyor_examples import project_names, sample_records

    if name not in project_names():
        raise CliError(
            f"no example named {name!r} (examples: {', '.join(project_names())})", ExitCode.USAGE
        )
    rows = sample_records(name, records, seed=seed)
    if as_json or format is Format.jsonl:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: str(v).lower() if isinstance(v, bool) else v for k, v in r.items()} for r in rows
    )
