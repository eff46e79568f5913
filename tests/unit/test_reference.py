"""The committed reference pages (docs/reference/) are the export of the code, and each covers
what it claims to: every command, every setting, every metric, every topic and channel."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor_contracts import CATALOG
from conveyor_contracts.schemas import asyncapi
from tests.tools import load

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "reference"
# An instrument as the code creates it (name, kind, unit): read independently of the tool.
_INSTRUMENT = re.compile(
    r"create_(counter|histogram|gauge|up_down_counter|observable_gauge)\(\s*"
    r'"([a-z_.]+)"(?:[^)]*?unit="([^"]*)")?',
    re.S,
)


@pytest.fixture(scope="module")
def tool():
    return load("reference")


def test_the_committed_reference_is_the_export_of_the_code(tool):
    assert tool.check() == [], "run `make schemas`"


def test_the_cli_page_has_every_command_and_option(tool):
    import typer

    from conveyor_cli.main import app

    page = (PAGES / "cli.md").read_text()
    root = typer.main.get_command(app)
    commands = list(tool._commands(root, typer.Context(root, info_name="conveyor")))
    assert len(commands) > 20
    for command, context in commands:
        assert f"## `{context.command_path}`" in page, context.command_path
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and not getattr(param, "hidden", False):
                    assert f"`{opt}" in page or f" {opt}" in page, (context.command_path, opt)


def test_the_settings_page_names_every_variable_each_service_reads(tool):
    page = (PAGES / "settings.md").read_text()
    for service, cls in tool.settings_classes().items():
        for name in cls.model_fields:
            assert f"| `{name.upper()}` |" in page, (service, name)
    # A service's own default is shown in its section, not only the shared one.
    serving = page.split("\n## serving\n")[1].split("\n## ")[0]
    assert "| `HTTP_PORT` | integer | `8105` |" in serving


def test_the_metrics_page_documents_every_instrument_the_code_creates():
    page = (PAGES / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(conveyor_[a-z_]+)` \|", page, re.M))
    created = set()
    for path in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        for kind, name, unit in _INSTRUMENT.findall(path.read_text()):
            base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
            created.add(base + ("_total" if kind == "counter" else ""))
    assert len(created) > 20
    assert documented == created, documented ^ created
    for row in re.findall(r"^\| `conveyor_[a-z_]+` \|.*$", page, re.M):
        assert row.split(" | ")[4].strip(" |"), row  # what it says


def test_the_topic_and_asyncapi_pages_show_every_topic_and_channel():
    topics = (PAGES / "topics.md").read_text()
    rendered = (PAGES / "asyncapi.md").read_text()
    for spec in CATALOG:
        assert f"| `{spec.name}` | {spec.key} | [v{spec.version}]" in topics, spec.name
        assert f"| `{spec.name}` | `" in topics.split("## Event types")[1], spec.name
    for cid, channel in asyncapi()["channels"].items():
        assert f"### {cid}\n" in rendered and f"`{channel['address']}`" in rendered, cid
    for oid in asyncapi()["operations"]:
        assert f"| `{oid}` |" in rendered, oid
