"""Build the Cython/C kernels of fheml._core.

Set FHEML_DEBUG=1 for a checked build (bounds checks, no -O3).
"""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FHEML_DEBUG", "") not in ("", "0")

if sys.platform == "win32":
    compile_args = ["/O2"] if not DEBUG else ["/Od"]
else:
    # No -march here: SIMD paths are compiled per function (target attributes) and
    # chosen at run time, so the wheel runs on any x86-64 / arm64 CPU.
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
}


def ext(name):
    return Extension(
        f"fheml._core.{name}",
        [f"fheml/_core/{name}.pyx"],
        include_dirs=[np.get_include(), "fheml/_core"],
        depends=[f"fheml/_core/{h}" for h in ("chacha20.h", "cpu.h", "kernels.h", "kernels_impl.h",
                                              "kernels_vec.h", "glwe_kernels.h")],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


setup(
    ext_modules=cythonize(
        [ext("_csprng"), ext("_kernels")],
        compiler_directives=directives,
        # The generated C depends on numpy's headers (1.x and 2.x differ): one directory
        # per numpy version, so environments built from one tree never share stale C.
        build_dir=f"build/cython-numpy-{np.__version__}",
    ),
)
