import pytest

from fheml._core import _kernels


@pytest.fixture(params=_kernels.SIMD_LEVELS)
def simd(request):
    """Run a kernel test on every kernel path (portable, AVX2, AVX-512) the CPU can run."""
    if request.param not in _kernels.available_simd_levels():
        pytest.skip(f"CPU without the {request.param} kernels")
    previous = _kernels.set_simd_level(request.param)
    yield request.param
    _kernels.set_simd_level(previous)
