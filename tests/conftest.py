import pytest

from fheml._core import _kernels


@pytest.fixture(params=[True, False], ids=["simd", "portable"])
def simd(request):
    """Run a kernel test on the AVX2/FMA path (when the CPU has it) and on the portable path."""
    if request.param and not _kernels.CPU_HAS_AVX2:
        pytest.skip("CPU without AVX2/FMA")
    previous = _kernels.set_simd(request.param)
    yield request.param
    _kernels.set_simd(previous)
