"""The committed HTTP reference (docs/http.md, schemas/http/) is the export of the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "http_reference.py"


def _tool():
    spec = importlib.util.spec_from_file_location("http_reference", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_http_reference_is_the_export_of_the_code():
    assert _tool().check() == [], "run `make schemas`"


def test_every_write_is_marked_as_needing_a_token():
    tool = _tool()
    page = (TOOL.parents[1] / "docs" / "http.md").read_text()
    for service, doc in tool.documents().items():
        for path, methods in doc["paths"].items():
            for method in methods:
                if method in ("post", "put", "delete") and path not in tool.HEALTH:
                    row = f"| {method.upper()} | `{path}` | **token** |"
                    # The feature service's training-set read is a POST without side effects.
                    if (service, path) != ("feature", "/projects/{project}/training-set"):
                        assert row in page, f"{service}: {method} {path} takes no token"
