"""Sphinx configuration: ``python -m sphinx -b html docs docs/_build/html`` (extra fheml[docs])."""

import fheml

project = "fheml"
release = version = fheml.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon",
              "sphinx.ext.viewcode"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "alabaster"
# The estimators' docstrings include those of the wrapped scikit-learn classes, whose
# cross-references point into scikit-learn's own documentation (glossary, user guide).
suppress_warnings = ["ref.term", "ref.ref"]
