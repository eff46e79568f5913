"""The docs build in strict mode: every page is in the navigation and every link between pages
(and to a heading) resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_build_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # A page builds to <page>/index.html; an index.md to its folder's index.html.
    pages = {
        p.parent if p.name == "index" else p
        for p in (
            md.relative_to(ROOT / "docs").with_suffix("") for md in (ROOT / "docs").rglob("*.md")
        )
    }
    built = {p.parent.relative_to(tmp_path) for p in tmp_path.rglob("index.html")}
    assert len(pages) > 30
    assert pages <= built, pages - built
