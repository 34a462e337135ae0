"""Documentation: every page is reachable and its links resolve; the API reference builds."""

import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_every_page_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    pages = {p.stem for p in DOCS.glob("*.md")} | {p.stem for p in DOCS.glob("*.rst")}
    missing = [p for p in pages - {"index"} if f"\n{p}\n" not in index]
    assert not missing


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")) + [REPO / "README.md"],
                         ids=lambda p: p.name)
def test_local_links_resolve(page):
    for target, _ in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.slow
def test_api_reference_builds(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS),
                          str(tmp_path)], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    api = (tmp_path / "api.html").read_text()
    for name in ("FHEModelClient", "FHELogisticRegression", "select_parameters", "HTTPClient"):
        assert name in api
    # Problems in fheml's own docstrings and pages (the wrapped scikit-learn docstrings
    # carry references into scikit-learn's documentation, which Sphinx cannot resolve).
    ours = [line for line in out.stderr.splitlines()
            if "WARNING" in line or "ERROR" in line]
    ours = [line for line in ours if "sklearn" not in line and "linear_model.py" not in line
            and "duplicate object description" not in line]
    assert not ours, ours
