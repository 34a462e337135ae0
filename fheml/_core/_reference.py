"""Pure-numpy reference implementations of the engine's kernels, for tests only.

Everything here is exact integer arithmetic modulo 2^64 (no FFT), written for clarity, not
speed: the Cython/C kernels are checked against it.
"""

import numpy as np

_U = np.uint64


def negacyclic_mul(a, b):
    """a * b mod (X^N + 1, 2^64); a: small signed ints (int64), b: uint64 torus."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.uint64)
    N = b.shape[-1]
    out = np.zeros(N, dtype=np.uint64)
    for i in np.flatnonzero(a):
        out += _U(int(a[i]) % (1 << 64)) * mul_xpow(b, int(i))
    return out


def mul_xpow(b, e):
    """X^e * b mod X^N + 1 for e in [0, 2N)."""
    b = np.asarray(b, dtype=np.uint64)
    N = b.shape[-1]
    e %= 2 * N
    sign = e >= N
    e %= N
    rolled = np.roll(b, e)
    rolled[:e] = _U(0) - rolled[:e]
    return _U(0) - rolled if sign else rolled


def decompose(values, base_log, level, top_tie_on_lsb=True):
    """Balanced signed digits (level, n), most significant first, of the values rounded to
    their top base_log * level bits; a tie (digit B/2) becomes -B/2 with a carry when the
    rest is odd, so that digits have mean 0.  At the top level the keyswitch kernel splits
    ties on the rounded value's lowest bit (``top_tie_on_lsb``); the bootstrap's fused
    decomposition keeps the parity rule there (ties have probability 2^-base_log)."""
    values = [int(v) for v in np.asarray(values, dtype=np.uint64).reshape(-1)]
    total = base_log * level
    B = 1 << base_log
    out = np.zeros((level, len(values)), dtype=np.int64)
    for j, v in enumerate(values):
        st = v if total >= 64 else (v + (1 << (63 - total))) >> (64 - total)
        lsb = st & 1
        for l in range(level - 1, -1, -1):
            d = st % B
            st //= B
            tie_carry = (st if l or not top_tie_on_lsb else lsb) % 2 == 1
            if d > B // 2 or (d == B // 2 and tie_carry):
                d -= B
                st += 1
            out[l, j] = d
    return out


def top32(x):
    x = np.asarray(x, dtype=np.uint64)
    return ((x >> _U(32)) + ((x >> _U(31)) & _U(1))).astype(np.uint32)


def keyswitch(ksk32, base_log, level, ct):
    """Keyswitch one ciphertext (u64, dimension n_in) with a uint32 key (n_in, level, n+1);
    returns the top-32-bit output (uint32, n+1) as the kernel computes it."""
    n_in = ksk32.shape[0]
    out = np.zeros(ksk32.shape[2], dtype=np.uint32)
    out[-1] = top32(ct[-1])
    digits = decompose(ct[:n_in], base_log, level)
    for i in range(n_in):
        for l in range(level):
            out -= np.uint32(int(digits[l, i]) % (1 << 32)) * ksk32[i, l]
    return out


def centered_modulus_switch32(ct32, polynomial_size):
    """Modulus switch of 32-bit LWE ciphertexts (..., mask + body) to Z / 2N, each body
    first taking half the sum of its mask's rounding errors (floored), as the kernel does:
    the mean of ``sum_i e_i s_i`` over a uniform binary key.  The body is then rounded
    down, so that each box of a test polynomial is centred on its message (see
    ``pbs_range`` in kernels_impl.h): the switched phase is half a step low on average."""
    log2_2n = int(polynomial_size).bit_length()
    sh = 32 - log2_2n
    c = np.asarray(ct32, dtype=np.int64)
    rounded = ((c[..., :-1] >> (sh - 1)) + 1) >> 1
    err = np.sum((rounded << sh) - c[..., :-1], axis=-1)
    body = (c[..., -1] + (err >> 1)) % (1 << 32)
    out = np.concatenate([rounded, (body >> sh)[..., None]], axis=-1)
    return out.astype(np.uint64) & _U((1 << log2_2n) - 1)


def external_product(ggsw, glwe, base_log, level):
    """Exact external product.  ggsw: ((k+1)*level, k+1, N) u64; glwe: (k+1, N) u64."""
    K1, N = glwe.shape
    out = np.zeros_like(glwe)
    for q in range(K1):
        digits = decompose(glwe[q], base_log, level, top_tie_on_lsb=False)
        for l in range(level):
            for r in range(K1):
                out[r] += negacyclic_mul(digits[l], ggsw[q * level + l, r])
    return out


def multibit_step(ggsws, acc, a, base_log, level):
    """One step of the multi-bit blind rotation, exactly:
    ``acc + sum_c (X^<a,c> - 1) * ExtProd(ggsws[c - 1], acc)`` over the non-empty subsets c
    of the group (bit t of c for mask t), with ``<a,c>`` the sum of the masks in c mod 2N.

    ggsws : (2^g - 1, (k+1)*level, k+1, N) u64, GGSW c - 1 encrypting ``[s == c]`` for the
    group's key bits s; acc : (k+1, N) u64; a : the g modulus-switched masks."""
    K1, N = acc.shape
    out = acc.copy()
    for c in range(1, ggsws.shape[0] + 1):
        e = sum(int(x) for t, x in enumerate(a) if c >> t & 1) % (2 * N)
        if e == 0:
            continue
        prod = external_product(ggsws[c - 1], acc, base_log, level)
        out += np.stack([mul_xpow(prod[q], e) - prod[q] for q in range(K1)])
    return out


def multibit_indicators(bits, grouping):
    """Messages of a multi-bit key: ``(n / g, 2^g - 1)`` 0/1, entry (j, c - 1) is 1 when the
    bits of group j (bit t of c for bit j*g + t) equal c."""
    groups = np.asarray(bits, dtype=np.int64).reshape(-1, grouping)
    value = (groups << np.arange(grouping)).sum(axis=1)
    return (value[:, None] == np.arange(1, 1 << grouping)[None, :]).astype(np.uint8)


def programmable_bootstrap(ksk32, ks_base_log, ks_level, bsk, pbs_base_log, pbs_level, lut, ct,
                           grouping=1):
    """KS -> MS -> blind rotation -> sample extraction, with exact arithmetic.

    bsk: torus GGSWs (n, (k+1)*pbs_level, k+1, N), or with ``grouping`` g > 1 the
    (n/g * (2^g - 1), ...) GGSWs of :func:`multibit_step`; lut: (N,) u64 test polynomial."""
    _, _, K1, N = bsk.shape
    k = K1 - 1
    small = keyswitch(ksk32, ks_base_log, ks_level, ct) if ksk32 is not None else top32(ct)
    n = small.size - 1
    ms = centered_modulus_switch32(small, N)
    acc = np.zeros((K1, N), dtype=np.uint64)
    acc[k] = mul_xpow(lut, (2 * N - int(ms[n])) % (2 * N))
    if grouping > 1:
        S = (1 << grouping) - 1
        for j in range(n // grouping):
            acc = multibit_step(bsk[j * S:(j + 1) * S], acc,
                                ms[j * grouping:(j + 1) * grouping], pbs_base_log, pbs_level)
    else:
        for i in range(n):
            e = int(ms[i])
            if e == 0:
                continue
            diff = np.stack([mul_xpow(acc[q], e) - acc[q] for q in range(K1)])
            acc = acc + external_product(bsk[i], diff, pbs_base_log, pbs_level)
    out = np.empty(k * N + 1, dtype=np.uint64)
    for q in range(k):
        out[q * N] = acc[q, 0]
        out[q * N + 1:(q + 1) * N] = _U(0) - acc[q, :0:-1]
    out[k * N] = acc[k, 0]
    return out


def glwe_phase(key, masks, body):
    """B - sum_q S_q * A_q for one GLWE ciphertext: key (k, N) 0/1, masks (k, N), body (N,)."""
    out = np.asarray(body, dtype=np.uint64).copy()
    for q in range(key.shape[0]):
        out -= negacyclic_mul(key[q], masks[q])
    return out


def polynomial_matmul(polys, weights):
    """sum_c polys[c] * weights[c] mod (X^N + 1, 2^64): polys (C, N) u64, weights (C, S)."""
    C, N = polys.shape
    out = np.zeros(N, dtype=np.uint64)
    for c in range(C):
        w = np.zeros(N, dtype=np.int64)
        w[:weights.shape[1]] = weights[c]
        out += negacyclic_mul(w, polys[c])
    return out


def sample_extract(masks, body, h):
    """LWE (k*N + 1,) of coefficient h of a GLWE ciphertext, one coefficient at a time."""
    k, N = masks.shape
    out = np.empty(k * N + 1, dtype=np.uint64)
    for q in range(k):
        for j in range(N):
            out[q * N + j] = masks[q, h - j] if j <= h else -int(masks[q, N + h - j]) % 2**64
    out[k * N] = body[h]
    return out


def external_product_cmux(ggsw, acc, e, base_log, level):
    """One CMux step of the blind rotation, exactly: acc + ExtProd(ggsw, X^e acc - acc).

    ggsw : (k+1)*level rows of k+1 uint64 polynomials (row q*level + l: level l of
    polynomial q); acc : (k+1, N) uint64.  Decomposition as the bootstrap kernel does it
    (parity rule for ties at every level)."""
    K1, N = acc.shape
    diff = np.stack([mul_xpow(acc[q], e) - acc[q] for q in range(K1)])
    digits = decompose(diff.reshape(-1), base_log, level, top_tie_on_lsb=False)
    digits = digits.reshape(level, K1, N)
    out = acc.copy()
    for q in range(K1):
        for l in range(level):
            for c in range(K1):
                out[c] += negacyclic_mul(digits[l, q], ggsw[q * level + l, c])
    return out


def fft_noise_of_external_product(kernels, k, N, base_log, level, trials, rng, grouping=1):
    """Measured FFT noise of one CMux step of the bootstrap kernel, per kernel path.

    Random uniform GGSW rows and accumulators (what the blind rotation sees) go through
    ``kernels.blind_rotate`` on every path the CPU has and through the exact
    :func:`external_product_cmux` (with ``grouping`` g > 1: one multi-bit step through
    ``2^g - 1`` random GGSWs and :func:`multibit_step`).  The kernel's error on each
    ciphertext component is turned into the variance of the phase under a uniform binary
    GLWE key: an error e_q on mask polynomial q adds ``-s_q * e_q`` to the phase, of variance
    ``N/2 * var(e_q)`` on average over keys, so the phase variance is
    ``var(e_body) + k * N/2 * var(e_mask)`` (from ~(k+1)*N independent samples per trial,
    rather than N correlated phase values).

    Returns
    -------
    dict
        ``{path: phase variance}`` in torus² units, to compare with the FFT term of the noise
        model for one step.
    """
    plan = kernels.FourierPlan(N)
    K1, S = k + 1, (1 << grouping) - 1
    errors = {path: [] for path in kernels.available_simd_levels()}
    for _ in range(trials):
        ggsw = rng.integers(0, 2**64, (S, K1 * level, K1, N), dtype=np.uint64)
        acc = rng.integers(0, 2**64, (K1, N), dtype=np.uint64)
        a = rng.integers(1, 2 * N, grouping)
        if grouping == 1:
            exact = external_product_cmux(ggsw[0], acc, int(a[0]), base_log, level)
        else:
            exact = multibit_step(ggsw, acc, a, base_log, level)
        for path in errors:
            previous = kernels.set_simd_level(path)
            try:
                bsk = kernels.fft_forward_torus(plan, ggsw.reshape(-1, N)).reshape(S, K1 * level, K1, N)
                got = kernels.blind_rotate(plan, bsk, base_log, level, a[None].astype(np.int32),
                                           acc[None].copy(), grouping=grouping)[0]
            finally:
                kernels.set_simd_level(previous)
            errors[path].append((got - exact).view(np.int64).astype(float) / 2.0**64)
    out = {}
    for path, errs in errors.items():
        err = np.stack(errs)  # (trials, k+1, N)
        out[path] = float(np.mean(err[:, k] ** 2) + k * N / 2 * np.mean(err[:, :k] ** 2))
    return out
