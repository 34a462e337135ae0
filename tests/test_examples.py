"""Every script of examples/ runs to completion (each checks its own results)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
# Optional extras an example needs.
NEEDS = {"http_service.py": ["starlette", "uvicorn"], "dask_scale_out.py": ["distributed"]}


def test_examples_are_found():
    assert {"quickstart.py", "deployment.py", "http_service.py", "custom_circuit.py",
            "dask_scale_out.py"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    for module in NEEDS.get(script.name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{script.name} needs {module}")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip()
