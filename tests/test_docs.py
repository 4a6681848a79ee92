"""The documentation site: every task page is reachable from the index, the README links to pages that exist, and
the API reference covers every subpackage. (`.ci/run` builds the site with warnings as errors.)"""

import re

from .helpers import REPO

DOCS = REPO / "docs"


def test_every_page_is_in_the_index_and_every_readme_link_exists():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"(?m)^([a-z_]+)$", index))
    pages = {path.stem for path in DOCS.glob("*.md")} - {"index"}
    assert pages and pages | {"api"} == listed
    links = re.findall(r"\]\((docs/[^)]+)\)", (REPO / "README.md").read_text())
    assert {link.removeprefix("docs/").removesuffix(".md") for link in links} == pages
    assert all((REPO / link).is_file() for link in links)


def test_the_api_reference_covers_every_subpackage():
    documented = set(re.findall(r"automodule:: (\S+)", (DOCS / "api.rst").read_text()))
    subpackages = {f"monai_slicenav.{p.parent.name}" for p in (REPO / "monai_slicenav").glob("*/__init__.py")}
    undocumented = {p for p in subpackages if not any(m == p or m.startswith(p + ".") for m in documented)}
    assert not undocumented, undocumented
