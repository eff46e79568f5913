"""The README stays a short front page that opens with the two commands, and every relative link
in it and in docs/ leads to a file that exists (and, for a heading, to a heading there)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_BYTES = 8 * 1024
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc extension (MkDocs) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans: paths shown, not linked
    return LINK.findall(text)


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_readme_is_a_short_front_page():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block and text.index(first_block[0]) < text.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines()]
    assert commands == ["make run", "make test"]


def test_the_readmes_command_lines_are_those_the_using_it_test_runs():
    readme = README.read_text().split("## Using it", 1)[1]
    guide = (ROOT / "docs" / "getting-started.md").read_text()
    tested = re.search(r"<!-- using-it: cli -->\n```bash\n(.*?)```", guide, re.S)
    assert tested, "docs/getting-started.md has lost its tested CLI block"
    tested_lines = {line.split("  #")[0].strip() for line in tested[1].splitlines()}
    shown = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert shown
    for line in shown[1].splitlines():
        assert line.split("  #")[0].strip() in tested_lines, line


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        for target in _links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_links_and_headings():
    # The check above passes vacuously if it finds nothing: it must read links and anchors.
    assert len(_links(README)) >= 15
    assert "the-data-contract-and-quality-step-by-step" in _anchors(ROOT / "docs" / "projects.md")
