"""The built extensions use AVX only inside the run-time dispatched *_avx2 and *_avx512
kernels, so the package loads and runs on x86-64 CPUs without AVX2 (no "illegal
instruction")."""
import glob
import os
import platform
import re
import shutil
import subprocess

import pytest

import fheml._core

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None,
    reason="needs x86-64 and objdump",
)


def test_avx_instructions_only_in_dispatched_kernels():
    libs = glob.glob(os.path.join(os.path.dirname(fheml._core.__file__), "_*.so"))
    assert libs, "extensions not built"
    offenders = set()
    vex = re.compile(r"^\s+[0-9a-f]+:\s+v[a-z0-9]+\s")  # VEX-encoded: AVX and later
    for lib in libs:
        out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", lib], capture_output=True,
                             text=True, check=True).stdout
        function = None
        for line in out.splitlines():
            m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
            if m:
                function = m.group(1)
            elif vex.match(line) and not function.endswith(("_avx2", "_avx512")):
                offenders.add(function)
    assert not offenders, f"AVX instructions outside the dispatched kernels: {sorted(offenders)}"
