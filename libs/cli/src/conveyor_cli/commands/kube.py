"""`conveyor kube render|values`: Conveyor's Kubernetes resources, made from a values file and
the topic catalog (docs/kubernetes.md walks through an installation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import output
from ..app import CliError, ExitCode, Json, app

kube_app = typer.Typer(
    no_args_is_help=True,
    help="Conveyor on Kubernetes: its resources, made from a values file and the topic catalog.",
)
app.add_typer(kube_app, name="kube")

HEADER = (
    "# Conveyor's Kubernetes resources, made by\n"
    "#   conveyor kube render{args}\n"
    "# Change the values and render again rather than edit this file (or lay a Kustomize\n"
    "# overlay over it).\n"
)
KUSTOMIZATION = """\
# A Kustomize base: `kubectl apply -k <this directory>`, or an overlay of one's own on top.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - conveyor.yaml
"""

ValuesPath = Annotated[
    Path | None,
    typer.Option(
        "--values",
        "-f",
        help="A values file (YAML; `conveyor kube values` prints every key with its default).",
        dir_okay=False,
        exists=True,
        show_default=False,
    ),
]


def resources(values_path: Path | None) -> list[dict[str, Any]]:
    from ..kubernetes import ValuesError, load, render

    try:
        return render(load(values_path))
    except (ValuesError, ValueError) as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc


def manifest(values_path: Path | None, shown_as: str | None = None) -> str:
    """The resources of a values file as one YAML stream, with the header saying how it was
    made (`shown_as`: the values file as the header names it)."""
    import yaml

    made = resources(values_path)
    name = shown_as or (str(values_path) if values_path else None)
    args = f" --values {name}" if name else ""
    return HEADER.format(args=args) + yaml.safe_dump_all(made, sort_keys=False)


@kube_app.command("render")
def render_command(
    values: ValuesPath = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="A directory to write conveyor.yaml and kustomization.yaml (a Kustomize base) "
            "into; default: the resources on stdout.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="The resources as one JSON List (kubectl applies it) rather than YAML; with "
            "--out, the files written, as JSON.",
        ),
    ] = False,
) -> None:
    """Write the resources of an installation: the seven services (Deployments with their
    probes, Services, PodDisruptionBudgets, KEDA autoscaling on consumer lag) and, as the
    values say, Strimzi's Kafka with the catalog's topics and a user per service, and a
    CloudNativePG database."""
    if out is None:
        if as_json:
            output.emit_json({"apiVersion": "v1", "kind": "List", "items": resources(values)})
        else:
            typer.echo(manifest(values), nl=False)
        return
    text = manifest(values)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "conveyor.yaml", out / "kustomization.yaml"]
    written[0].write_text(text)
    written[1].write_text(KUSTOMIZATION)
    if as_json:
        output.emit_json({"written": [str(p) for p in written]})
    else:
        typer.echo(f"{written[0]} and {written[1]} written", err=True)


@kube_app.command("values")
def values_command(as_json: Json = False) -> None:
    """Print every value with its default (YAML): a values file to start from."""
    import yaml

    from ..kubernetes import Values

    defaults = Values().model_dump(mode="json")
    if as_json:
        output.emit_json(defaults)
    else:
        typer.echo(yaml.safe_dump(defaults, sort_keys=False), nl=False)
