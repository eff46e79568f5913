"""The AsyncAPI document passes the official AsyncAPI parser (`@asyncapi/parser`, from npm, at
the version `tools/asyncapi/package-lock.json` pins; installed here when missing)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "asyncapi"


@pytest.fixture(scope="module")
def parser() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed to run the AsyncAPI parser"
    if not (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=TOOL,
            check=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
    return [node, str(TOOL / "check.mjs")]


def parse(parser: list[str], document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*parser, str(document)], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_committed_document_parses(parser: list[str]) -> None:
    done = parse(parser, ROOT / "schemas" / "asyncapi.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout


def test_the_parser_refuses_an_openapi_discriminator_in_an_asyncapi_schema(
    parser: list[str], tmp_path: Path
) -> None:
    """The check can fail: a payload given as AsyncAPI Schema with pydantic's object-form
    discriminator (what the document had before its payloads were named JSON Schema)."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    document = json.loads((schemas / "asyncapi.json").read_text())
    for message in document["components"]["messages"].values():
        message["payload"] = message["payload"]["schema"]
    (schemas / "asyncapi.json").write_text(json.dumps(document))
    done = parse(parser, schemas / "asyncapi.json")
    assert done.returncode == 1
    assert "discriminator" in done.stdout
