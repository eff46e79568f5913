"""The committed HTTP reference (docs/http.md, schemas/http/) is the export of the code."""

from __future__ import annotations

from tests.tools import TOOLS, load


def _tool():
    return load("http_reference")


def test_the_committed_http_reference_is_the_export_of_the_code():
    assert _tool().check() == [], "run `make schemas`"


def test_every_write_is_marked_as_needing_a_token():
    tool = _tool()
    page = (TOOLS.parent / "docs" / "http.md").read_text()
    for service, doc in tool.documents().items():
        for path, methods in doc["paths"].items():
            for method in methods:
                if method in ("post", "put", "delete") and path not in tool.HEALTH:
                    row = f"| {method.upper()} | `{path}` | **token** |"
                    # The feature service's training-set read is a POST without side effects.
                    if (service, path) != ("feature", "/projects/{project}/training-set"):
                        assert row in page, f"{service}: {method} {path} takes no token"
