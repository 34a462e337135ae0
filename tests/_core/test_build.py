"""The built extensions use AVX only inside the run-time dispatched SIMD kernels, so the
package loads and runs on x86-64 CPUs without AVX2 or AVX-512 (no "illegal instruction"):
VEX-encoded instructions (AVX, AVX2, FMA) only in functions named *_avx2 or *_avx512, and
EVEX-encoded ones (AVX-512) only in *_avx512 functions."""
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

# legacy prefixes that may precede a VEX/EVEX prefix byte
_LEGACY_PREFIXES = {"26", "2e", "36", "3e", "64", "65", "67"}


def _encoding(raw_bytes):
    """'evex', 'vex' or None from the bytes of one instruction (hex strings)."""
    for b in raw_bytes:
        if b in _LEGACY_PREFIXES:
            continue
        # in 64-bit mode 0x62 is always EVEX and 0xc4 / 0xc5 always VEX
        return {"62": "evex", "c4": "vex", "c5": "vex"}.get(b)
    return None


def _instructions_by_encoding(lib):
    """{function: {"vex", "evex"} used} for the disassembly of one shared library."""
    out = subprocess.run(["objdump", "-d", "-w", lib], capture_output=True, text=True,
                         check=True).stdout
    used, function = {}, None
    insn = re.compile(r"^\s+[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t")
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            # GCC clones keep the name before a dot: f.part.0, f.constprop.0, f.cold
            function = m.group(1).split(".")[0]
            continue
        m = insn.match(line)
        if m:
            enc = _encoding(m.group(1).split())
            if enc:
                used.setdefault(function, set()).add(enc)
    return used


@pytest.fixture(scope="module")
def encodings():
    libs = glob.glob(os.path.join(os.path.dirname(fheml._core.__file__), "_*.so"))
    assert libs, "extensions not built"
    used = {}
    for lib in libs:
        for function, encs in _instructions_by_encoding(lib).items():
            used.setdefault(function, set()).update(encs)
    return used


def test_vex_instructions_only_in_dispatched_kernels(encodings):
    offenders = sorted(f for f, e in encodings.items()
                       if "vex" in e and not f.endswith(("_avx2", "_avx512")))
    assert not offenders, f"AVX instructions outside the dispatched kernels: {offenders}"


def test_evex_instructions_only_in_avx512_kernels(encodings):
    offenders = sorted(f for f, e in encodings.items() if "evex" in e and not f.endswith("_avx512"))
    assert not offenders, f"AVX-512 instructions outside the *_avx512 kernels: {offenders}"


def test_every_simd_copy_is_built(encodings):
    """The check above could pass vacuously: each SIMD copy exists and uses its encoding."""
    assert "vex" in encodings.get("pbs_range_avx2", set())
    assert "evex" in encodings.get("pbs_range_avx512", set())
    assert "evex" in encodings.get("chacha20_blocks16_avx512", set())
    assert "vex" in encodings.get("chacha20_blocks8_avx2", set())
