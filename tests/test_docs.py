"""The README's documentation list: a page under docs/ that it leaves out is a page a new user never finds."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def documentation_list() -> set[str]:
    """The pages the README's "Documentation" section links to."""
    readme = (ROOT / "README.md").read_text()
    section = readme.partition("\n## Documentation\n")[2].partition("\n## ")[0]
    return set(re.findall(r"^- \[[^]]+\]\(([^)]+)\)", section, re.MULTILINE))


def test_the_readme_lists_every_page_of_the_docs() -> None:
    pages = {str(page.relative_to(ROOT)) for page in (ROOT / "docs").glob("*.md")}
    listed = documentation_list()
    assert pages - listed == set(), "pages the README's documentation list leaves out"
    assert listed - pages == set(), "links in the README's documentation list to no page"
