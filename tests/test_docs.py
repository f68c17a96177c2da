"""The documentation's links lead somewhere: every relative link and every backquoted path of
the repository named in README.md and docs/*.md exists (a moved file breaks the page that
sends a reader to it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# A backquoted path with a directory of ours in front (`fabcity/read/metrics.py`), or any
# relative path to a page or a module (`shared/devices/FORMATS.md` once sent readers nowhere).
PATH = re.compile(
    r"`((?:fabcity|services|workers|schemas|tests|bench|deploy|docs)/[\w./-]+?\.\w+"
    r"|[\w-]+(?:/[\w.-]+)+\.(?:md|py))`"
)


def targets(page: Path) -> list[tuple[str, Path]]:
    text = page.read_text()
    out = []
    for link in LINK.findall(text):
        if "://" in link or link.startswith("mailto:"):
            continue
        out.append((link, (page.parent / link).resolve()))
    out += [(p, ROOT / p) for p in PATH.findall(text) if "*" not in p and "{" not in p]
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_paths_exist(page: Path) -> None:
    broken = [link for link, target in targets(page) if not target.exists()]
    assert not broken, f"{page.name} points to what is not there: {broken}"
