"""The engine's trust boundary: byte parsing, ciphertexts, keys, precisions, parameter sets
and the private kernel wrappers refuse what they cannot honestly process (issue 7)."""
import dataclasses
import hashlib
import json
import math
import struct
import warnings

import numpy as np
import pytest

from fheml._core import (
    EvaluationKeys,
    InsecureKeyWarning,
    LimitExceededError,
    LweCiphertext,
    ParameterSet,
    SecretKeys,
    SerializationError,
    decode,
    encode,
    linear,
    select_parameters,
)
from fheml._core import _kernels
from fheml._core import parameters as P
from fheml._core.keys import INSECURE_SEED_ENV
from fheml._core.serialization import MAGIC, pack, unpack
from tests._core.keyring import keys_for

rng = np.random.default_rng(17)


def raw_pack(kind, header_text, body=b""):
    """Bytes in the documented layout with any header text (valid digest)."""
    h = header_text.encode() if isinstance(header_text, str) else header_text
    data = struct.pack("<6sH16sQ", MAGIC, 1, kind.encode().ljust(16, b"\0"), len(h)) + h + body
    return data + hashlib.sha256(data).digest()


# -- unpack: one exception type for every malformed header --------------------------------
@pytest.mark.parametrize("header", [
    '{"arrays": [{"dtype": "<u8", "shape": [Infinity]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [NaN]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [9223372036854775808]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [4294967296, 4294967296, 4294967296]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [-1]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [1.5]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [true]}]}',
    '{"arrays": [{"dtype": "<u8", "shape": "12"}]}',
    '{"arrays": [{"dtype": ["<u8"], "shape": [1]}]}',
    '{"arrays": [{"dtype": [["a", "<u8"]], "shape": [1]}]}',
    '{"arrays": [{"dtype": "O", "shape": [1]}]}',
    '{"arrays": [{"dtype": "<u8"}]}',
    '{"arrays": [{"dtype": "<u8", "shape": [1], "extra": 1}]}',
    '{"arrays": [7]}',
    '{"arrays": 7}',
    '{"x": ' + "1" * 5000 + ', "arrays": []}',
    '{"x": ' + "[" * 100000 + "]" * 100000 + ', "arrays": []}',
    '[1, 2]',
    '{"arrays": []',
    '\xff\xfe',
])
def test_unpack_malformed_headers_raise_serialization_error(header):
    with pytest.raises(SerializationError):
        unpack(raw_pack("thing", header), "thing")


def test_unpack_checks_sizes_exactly_and_copies_once():
    a = np.arange(5, dtype=np.uint64)
    blob = pack("thing", {"k": 1}, [a])
    header, (b,) = unpack(memoryview(blob), "thing")
    assert header == {"k": 1} and np.array_equal(a, b) and b.flags.writeable
    # the shape product must match the data exactly (no wrap-around, no trailing bytes)
    text = '{"arrays":[{"dtype":"<u8","shape":[%d]}]}'
    body = a.tobytes()
    assert unpack(raw_pack("thing", text % 5, body), "thing")[1][0].size == 5
    for n in (4, 6, 2**61 + 5, 2**64 + 5):
        with pytest.raises(SerializationError):
            unpack(raw_pack("thing", text % n, body), "thing")


def test_integrity_is_not_authentication():
    """Anyone can recompute the digest: a resealed forgery passes the integrity check (the
    module documents that a deployment must authenticate the bytes itself)."""
    blob = pack("thing", {"owner": "alice"})
    forged = raw_pack("thing", json.dumps({"owner": "mallory", "arrays": []}))
    assert unpack(forged, "thing")[0]["owner"] == "mallory"
    assert unpack(blob, "thing")[0]["owner"] == "alice"


# -- ciphertexts: checked before the masks are expanded ------------------------------------
def _seeded_ct_bytes(dimension, bodies=100):
    header = {"key_id": "k", "dimension": dimension, "mask_seed": "00" * 32}
    return pack("ciphertext", header, [np.zeros(bodies, np.uint64)])


def test_lying_dimension_refused_before_expansion():
    blob = _seeded_ct_bytes(2**24)          # honest expansion: 100 * (2^24 + 1) words
    with pytest.raises(SerializationError, match="dimension"):
        LweCiphertext.from_bytes(blob, expected_dimension=2048)
    with pytest.raises(SerializationError, match="dimension"):
        LweCiphertext.from_bytes(blob)          # beyond any parameter set
    # a dimension that exists, but 10^5 bodies of it would expand to 105 GB
    with pytest.raises(LimitExceededError, match="max_expanded_bytes") as info:
        LweCiphertext.from_bytes(_seeded_ct_bytes(2**17, 10**5))
    assert info.value.limit == "max_expanded_bytes" and info.value.value > 10**11
    ct = LweCiphertext.from_bytes(_seeded_ct_bytes(600, 7), max_expanded_bytes=7 * 601 * 8)
    assert ct.data.shape == (7, 601)
    with pytest.raises(LimitExceededError):
        LweCiphertext.from_bytes(_seeded_ct_bytes(600, 7), max_expanded_bytes=7 * 601 * 8 - 1)


def test_chunked_mask_expansion_matches_the_encryption(monkeypatch):
    from fheml._core import keys
    params, sk, _ = keys_for(3)
    monkeypatch.setattr(keys, "_MASK_CHUNK_WORDS", 3 * params.big_lwe_dimension + 5)
    m = rng.integers(0, 8, (4, 5))
    ct = sk.encrypt(m)
    back = LweCiphertext.from_bytes(ct.to_bytes(), expected_key_id=sk.key_id,
                                    expected_dimension=params.big_lwe_dimension)
    assert np.array_equal(back.data, ct.data)
    assert np.array_equal(sk.decrypt(back), m)


@pytest.mark.parametrize("meta", [
    {"key_id": "k", "dimension": "600"},
    {"key_id": 5, "dimension": 600},
    {"key_id": "k", "dimension": True},
    {"key_id": "k", "dimension": 0},
    {"key_id": "k", "dimension": 600, "mask_seed": "zz" * 32},
    {"key_id": "k", "dimension": 600, "mask_seed": ["00"]},
    {"key_id": "k", "dimension": 600, "other": 1},
])
def test_bad_ciphertext_headers(meta):
    with pytest.raises(SerializationError):
        LweCiphertext.from_parts(meta, [np.zeros(3, np.uint64)])


# -- secret keys ----------------------------------------------------------------------------
def test_secret_key_values_checked_before_any_cast():
    params, sk, _ = keys_for(2)
    lwe = sk.lwe_key.astype(np.int64) * 256           # casts to an all-zero uint8 key
    with pytest.raises(TypeError, match="uint8"):
        SecretKeys(params, lwe, sk.glwe_key, "id")
    with pytest.raises(ValueError, match="binary"):
        SecretKeys(params, sk.lwe_key * 2, sk.glwe_key, "id")
    blob = pack("secret-keys", {"params": params.to_dict(), "key_id": "id", "insecure": False},
                [lwe, sk.glwe_key])
    with pytest.raises(SerializationError, match="uint8"):
        SecretKeys.from_bytes(blob)


@pytest.mark.parametrize("which", ["lwe", "glwe"])
@pytest.mark.parametrize("fill", [0, 1])
def test_secret_keys_of_implausible_weight_refused(which, fill):
    params, sk, _ = keys_for(2)
    lwe, glwe = sk.lwe_key.copy(), sk.glwe_key.copy()
    (lwe if which == "lwe" else glwe)[...] = fill
    with pytest.raises(ValueError, match="implausible"):
        SecretKeys(params, lwe, glwe, "id")
    blob = pack("secret-keys", {"params": params.to_dict(), "key_id": "id", "insecure": False},
                [lwe, glwe])
    with pytest.raises(SerializationError, match="implausible"):
        SecretKeys.from_bytes(blob)
    # a real key round-trips
    assert np.array_equal(SecretKeys.from_bytes(sk.to_bytes()).glwe_key, sk.glwe_key)


def test_insecure_keys_warn_on_every_use(monkeypatch):
    monkeypatch.setenv(INSECURE_SEED_ENV, "1")
    params = select_parameters(20, norm2=1.0, bootstrap=False)
    sk = SecretKeys.generate(params, seed=bytes(32))
    for use in (lambda: sk.encrypt([1, 2], precision=4),
                lambda: sk.decrypt(ct, precision=4),
                lambda: sk.phase(ct),
                lambda: sk.evaluation_keys()):
        ct = LweCiphertext(np.zeros((1, params.lwe_dimension + 1), np.uint64), sk.key_id)
        with pytest.warns(InsecureKeyWarning):
            use()
    loaded = SecretKeys.from_bytes(sk.to_bytes())
    assert loaded.insecure
    with pytest.warns(InsecureKeyWarning):
        loaded.encrypt([1])
    secure = SecretKeys.generate(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        secure.decrypt(secure.encrypt([3]))


# -- precisions the noise cannot carry -----------------------------------------------------
def test_encrypt_decrypt_refuse_precisions_beyond_the_noise():
    params, sk, _ = keys_for(2)
    fresh = params.big_noise_std ** 2
    widest = max(q for q in range(1, 63) if P.log2_p_fail(fresh, q) <= math.log2(params.p_error))
    ct = sk.encrypt([1], precision=widest)
    with pytest.raises(ValueError, match="noise"):
        sk.encrypt([1], precision=widest + 1)
    with pytest.raises(ValueError, match="noise"):
        sk.decrypt(ct, precision=34)
    # decryption also covers bootstrap outputs, the noisier ciphertexts of the key
    pbs_ok = max(q for q in range(1, 63)
                 if P.log2_p_fail(params.variance_pbs, q) <= math.log2(params.p_error))
    sk.decrypt(ct, precision=pbs_ok)
    with pytest.raises(ValueError, match="noise"):
        sk.decrypt(ct, precision=pbs_ok + 1)


def test_output_precision_beyond_the_bootstrap_noise_is_refused():
    params, sk, ek = keys_for(2)
    ct = sk.encrypt([1, 2])
    with pytest.raises(ValueError, match="noise"):
        ek.programmable_bootstrap(ct, np.arange(4), output_precision=8)


@pytest.mark.parametrize("precision", [0, -1, 63, 1.0, True])
def test_encode_decode_add_plain_refuse_bad_precisions(precision):
    params, sk, _ = keys_for(2)
    ct = sk.encrypt([1])
    with pytest.raises((ValueError, TypeError)):
        encode([1], precision)
    with pytest.raises((ValueError, TypeError)):
        decode(np.zeros(1, np.uint64), precision)
    with pytest.raises((ValueError, TypeError)):
        linear.add_plain(ct, 1, precision=precision)


def test_encode_refuses_values_outside_the_message_space():
    assert np.array_equal(encode([-4, 7], 2) >> np.uint64(61), [4, 7])
    for bad in ([-5], [8], [2**70]):
        with pytest.raises((ValueError, TypeError)):
            encode(bad, 2)
    with pytest.raises(TypeError):
        encode([0.5], 2)


# -- parameter sets -------------------------------------------------------------------------
def _set(**changes):
    return ParameterSet(**{**select_parameters(4, p_error=2.0**-40).to_dict(), **changes})


@pytest.mark.parametrize("changes", [
    dict(pbs_base_log=32, pbs_level=1), dict(pbs_base_log=40, pbs_level=1),
    dict(ks_base_log=32, ks_level=1), dict(ks_base_log=33, ks_level=1),
    dict(glwe_dimension=10**6),
])
def test_parameter_sets_the_kernels_cannot_run_are_refused(changes):
    with pytest.raises(ValueError):
        _set(**changes)


def test_parameter_set_must_meet_its_own_p_error():
    good = select_parameters(4, p_error=2.0**-40)
    with pytest.raises(ValueError, match="own p_error"):
        _set(precision=8)                      # every lookup would fail
    with pytest.raises(ValueError, match="own p_error"):
        _set(p_error=2.0 ** (good.log2_p_fail() - 1))
    assert _set(p_error=2.0 ** (good.log2_p_fail() + 0.01)).p_error > 0


def test_no_key_below_the_curves_validated_dimension():
    assert P.MIN_SECURE_DIMENSION == 450
    for precision in (1, 2, 4, 8):
        for p_error in (2.0**-7, 2.0**-40, 2.0**-64):
            s = select_parameters(precision, p_error, bootstrap=False)
            assert s.lwe_dimension >= 450
    for precision in (1, 2, 3):
        s = select_parameters(precision, 2.0**-7)
        assert s.lwe_dimension >= 450 and s.big_lwe_dimension >= 450
    flat = select_parameters(2, 2.0**-40, bootstrap=False).to_dict()
    n = 449
    with pytest.raises(ValueError, match="450"):
        ParameterSet(**{**flat, "lwe_dimension": n, "lwe_noise_std": math.sqrt(P.var_min(n))})
    with pytest.raises(ValueError, match="450"):    # GLWE key k*N = 256
        _set(glwe_dimension=1, polynomial_size=256, glwe_noise_std=math.sqrt(P.var_min(256)))


def test_client_spec_cannot_carry_a_broken_set():
    from fheml._core.keys import params_from_header
    bad = {**select_parameters(2).to_dict(), "pbs_base_log": 40}
    with pytest.raises(SerializationError):
        params_from_header({"params": bad}, "client-spec")
    with pytest.raises(SerializationError):
        params_from_header({"params": {**bad, "lwe_dimension": 10**5000 // 10**4990}},
                           "client-spec")


# -- bootstrap entry point ------------------------------------------------------------------
def test_programmable_bootstrap_takes_read_only_ciphertexts_and_integer_indices():
    params, sk, ek = keys_for(2)
    m = np.array([0, 1, 2, 3])
    ct = sk.encrypt(m)
    ct.data.setflags(write=False)
    tables = np.array([[3, 2, 1, 0], [0, 0, 1, 1]])
    out = ek.programmable_bootstrap(ct, tables, table_index=np.array([0, 1, 0, 1]))
    assert np.array_equal(sk.decrypt(out), [3, 0, 1, 1])
    with pytest.raises(TypeError, match="integers"):
        ek.programmable_bootstrap(ct, tables, table_index=np.array([0.9, 0, 0, 0]))


def test_evaluation_keys_checked_before_expansion():
    params, sk, ek = keys_for(2)
    blob = ek.to_bytes()
    header, arrays = unpack(blob, "evaluation-keys")
    arrays = [arrays[0], arrays[1][:-1]]                  # one GGSW short
    with pytest.raises(SerializationError, match="shapes"):
        EvaluationKeys.from_bytes(pack("evaluation-keys", header, arrays))
    with pytest.raises(SerializationError, match="other parameters"):
        EvaluationKeys.from_bytes(blob, expected_params=select_parameters(3))


# -- private kernel wrappers: shapes, contiguity and ranges ----------------------------------
def test_mul_binary_exact_checks_out_rows():
    plan = _kernels.FourierPlan(256)
    key = rng.integers(0, 2, 256)
    a = rng.integers(0, 2**63, (4096, 256), dtype=np.uint64)
    with pytest.raises(ValueError, match="out"):
        _kernels.mul_binary_exact(plan, key, a, out=np.zeros((1, 256), np.uint64))
    with pytest.raises(ValueError, match="out"):
        _kernels.mul_binary_exact(plan, key, a[:2], out=np.zeros((2, 512), np.uint64)[:, ::2])
    with pytest.raises(ValueError, match="out"):
        _kernels.mul_binary_exact(plan, key, a[:2], out=np.zeros((2, 256), np.int64))
    with pytest.raises(ValueError, match="binary"):
        _kernels.mul_binary_exact(plan, key * 3, a[:2])
    with pytest.raises(ValueError, match="binary"):
        _kernels.mul_binary_exact(plan, key[:100], a[:2])
    with pytest.raises(ValueError):
        _kernels.mul_binary_exact(plan, key, a[:2].astype(np.int64))
    a.setflags(write=False)
    _kernels.mul_binary_exact(plan, key, a[:2])   # read-only input is fine


def test_add_f64_to_torus_refuses_copies_and_bad_values():
    x = np.full(8, 0.25)
    acc = np.zeros(16, np.uint64)
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.add_f64_to_torus(x, acc[::2])          # was a silent no-op
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.add_f64_to_torus(x, acc[:8].astype(np.int64))
    with pytest.raises(ValueError):
        _kernels.add_f64_to_torus(x, acc)                # size mismatch
    with pytest.raises(ValueError, match="finite"):
        _kernels.add_f64_to_torus(np.full(16, np.nan), acc)
    _kernels.add_f64_to_torus(np.full(16, 0.25), acc)
    assert np.all(acc == np.uint64(1) << np.uint64(62))


@pytest.mark.parametrize("base_log, level", [(0, 3), (32, 1), (33, 2), (4, 0), (8, 9)])
def test_keyswitch_and_pbs_wrappers_validate_base_logs(base_log, level):
    params, sk, ek = keys_for(2)
    ct = sk.encrypt([1, 2])
    with pytest.raises(ValueError, match="decomposition"):
        _kernels.keyswitch_batch(ek.ksk, base_log, level, ct.data)
    with pytest.raises(ValueError, match="decomposition"):
        _kernels.decompose(np.zeros(3, np.uint64), base_log, level)
    p = params
    luts = ek.make_luts(np.arange(4)[None])
    out = np.empty((2, p.big_lwe_dimension + 1), np.uint64)
    args = dict(ks_base_log=p.ks_base_log, ks_level=p.ks_level, pbs_base_log=p.pbs_base_log,
                pbs_level=p.pbs_level)
    for prefix in ("ks", "pbs"):
        bad = {**args, f"{prefix}_base_log": base_log, f"{prefix}_level": level}
        with pytest.raises(ValueError):
            _kernels.pbs_range(_kernels.FourierPlan(p.polynomial_size), ek.ksk, bad["ks_base_log"],
                               bad["ks_level"], ek.bsk_fourier, p.lwe_dimension,
                               p.glwe_dimension, bad["pbs_base_log"], bad["pbs_level"], luts,
                               np.zeros(2, np.int64), np.ascontiguousarray(ct.data), out, 0, 2,
                               grouping=p.grouping_factor)


def test_pbs_range_checks_shapes_and_contiguity():
    params, sk, ek = keys_for(2)
    p = params
    plan = _kernels.FourierPlan(p.polynomial_size)
    cts = np.ascontiguousarray(sk.encrypt([1, 2, 3]).data)
    luts = ek.make_luts(np.arange(4)[None])
    idx = np.zeros(3, np.int64)

    def run(cts=cts, luts=luts, idx=idx, out=None, start=0, end=3, grouping=p.grouping_factor):
        out = np.empty((3, p.big_lwe_dimension + 1), np.uint64) if out is None else out
        return _kernels.pbs_range(plan, ek.ksk, p.ks_base_log, p.ks_level, ek.bsk_fourier,
                                  p.lwe_dimension, p.glwe_dimension, p.pbs_base_log,
                                  p.pbs_level, luts, idx, cts, out, start, end,
                                  grouping=grouping)

    assert np.array_equal(sk.decrypt(LweCiphertext(run(), sk.key_id)), [1, 2, 3])
    for bad in (dict(cts=cts[:, :-1]), dict(cts=cts[::-1]), dict(luts=luts[:, :-1]),
                dict(luts=luts[:0]), dict(idx=idx[:2]), dict(idx=idx + 1),
                dict(idx=idx.astype(np.int32)), dict(out=np.empty((2, cts.shape[1]), np.uint64)),
                dict(out=np.empty((3, cts.shape[1]), np.uint64)[:, ::1].T.copy().T),
                dict(start=2, end=1), dict(end=4), dict(grouping=p.grouping_factor % 3 + 1),
                dict(grouping=0), dict(grouping=4)):
        with pytest.raises(ValueError):
            run(**bad)
    with pytest.raises(ValueError):
        _kernels.PbsWorkspace(0, 1, 256, 1, 1, 1)


def test_dot_binary_and_fft_wrappers_check_inputs():
    with pytest.raises(ValueError):
        _kernels.dot_binary(np.zeros((2, 4), np.uint64), np.zeros(0, np.uint8))
    with pytest.raises(ValueError):
        _kernels.dot_binary(np.zeros((2, 4), np.int64), np.ones(4, np.uint8))
    plan = _kernels.FourierPlan(256)
    with pytest.raises(ValueError, match="int32"):
        _kernels.fft_forward_i32(plan, np.full((1, 256), 2**40))
    with pytest.raises(ValueError):
        _kernels.fft_forward_i32(plan, np.zeros((1, 128), np.int32))
    with pytest.raises(ValueError):
        _kernels.FourierPlan(300)


def test_replace_validates_like_the_constructor():
    s = select_parameters(3, p_error=2.0**-40)
    with pytest.raises(ValueError):
        dataclasses.replace(s, ks_base_log=32, ks_level=1)


def test_blind_rotate_wrapper_checks_inputs():
    N, k, level, base_log = 256, 1, 1, 20
    plan = _kernels.FourierPlan(N)
    rows = rng.integers(0, 2**64, ((k + 1) * level * (k + 1), N), dtype=np.uint64)
    bsk = _kernels.fft_forward_torus(plan, rows).reshape(1, (k + 1) * level, k + 1, N)
    acc = rng.integers(0, 2**64, (1, k + 1, N), dtype=np.uint64)
    _kernels.blind_rotate(plan, bsk, base_log, level, [[3]], acc.copy())
    for bad in (dict(base_log=32), dict(base_log=0), dict(abar=[[2 * N]]), dict(abar=[[0.5]]),
                dict(abar=[[2**32 + 3]]), dict(acc=acc[:, :, ::2]),
                dict(acc=acc.astype(np.int64)), dict(acc=np.zeros((0, k + 1, N), np.uint64))):
        args = {**dict(base_log=base_log, abar=[[3]], acc=acc.copy()), **bad}
        with pytest.raises(ValueError):
            _kernels.blind_rotate(plan, bsk, args["base_log"], level, args["abar"], args["acc"])
    read_only = acc.copy()
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        _kernels.blind_rotate(plan, bsk, base_log, level, [[3]], read_only)
