"""The kernel wrappers' validation and the kernel tests under a checked build (FHEML_DEBUG=1:
Cython bounds checks, -O0), built in a copy of the tree."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

WRAPPER_TESTS = ("mul_binary_exact or add_f64_to_torus or base_logs or pbs_range or "
                 "dot_binary or read_only or blind_rotate")


@pytest.mark.slow
def test_wrappers_and_kernels_under_a_checked_build(tmp_path):
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    ignore = shutil.ignore_patterns("*.so", "*.c", "__pycache__", "build")
    shutil.copytree(REPO / "fheml", tmp_path / "fheml", ignore=ignore)
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=ignore)
    env = dict(os.environ, FHEML_DEBUG="1", PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tmp_path,
                   env=env, check=True, capture_output=True, timeout=1800)
    for selection in (["tests/_core/test_boundary.py", "-k", WRAPPER_TESTS],
                      ["tests/_core/test_kernels.py", "tests/_core/test_fft.py"]):
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *selection], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=3600)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert " passed" in run.stdout.splitlines()[-1]
