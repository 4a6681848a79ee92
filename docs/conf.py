"""Sphinx configuration of the monai_slicenav documentation: task pages in Markdown (MyST), the API reference built
from the docstrings (autodoc + napoleon, Google style). Build: ``sphinx-build -W -b html docs docs/_build/html``."""

import monai_slicenav

project = "monai_slicenav"
author = "the monai_slicenav developers"
copyright = "2026, the monai_slicenav developers"
release = version = monai_slicenav.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
html_title = f"monai_slicenav {release}"
