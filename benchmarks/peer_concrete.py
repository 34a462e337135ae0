"""Time one programmable bootstrap (a single table lookup) in Zama's concrete-python.

This is fheml's optional *peer* for benchmark ratios. It is run by the PEER'S
interpreter, never by fheml's: it imports only the stdlib, numpy and
``concrete.fhe`` (never fheml).

How fheml uses it: the environment variable ``FHEML_PEER_PYTHON`` names an
interpreter that has concrete-python installed (e.g. ``/work/peer-venv/bin/python``,
set up with ``python3 -m venv /work/peer-venv && /work/peer-venv/bin/pip install
torch==2.13.0 'setuptools<80' concrete-python==2.10.0``). ``benchmarks/bench_pbs.py``
runs ``$FHEML_PEER_PYTHON benchmarks/peer_concrete.py --bits 4 6 8 --json`` in a
subprocess and parses the single JSON object printed on stdout.

For each bit width p it compiles ``x -> T[x]`` (x encrypted in [0, 2^p), T a fixed
random permutation of range(2^p)), i.e. exactly one PBS (plus its key switch), with
a per-lookup error probability of ``--p-error`` (``global_p_error=None`` makes
concrete set the global bound to 1.0, so the per-PBS bound is the only one).
Everything is single-threaded: thread-pool env vars are set before concrete is
imported, loop/dataflow/auto parallelization are off, and the process is pinned to
one CPU; the JSON reports cpu-time/wall-time of keygen and of the runs as a check.

Caveat built into concrete: every ``server.run`` builds a fresh runtime context that
converts the bootstrap key to the Fourier domain, so ``run_ms_*`` = one PBS + that
per-call overhead. ``pbs_ms_marginal`` (from a ``--chain``-lookup circuit run with
the same keys) is the cost of one more PBS, the fairer per-PBS number.

Output (``--json``): {"peer": "concrete-python X", "threads": 1, "results": [
{"bits", "run_ms_min", "run_ms_median", "run_cpu_over_wall", "pbs_ms_marginal", "chain",
"keygen_s", "keygen_cpu_over_wall", "compile_s",
"p_error" (achieved per-PBS), "p_error_requested", "global_p_error", "params",
"statistics", "eval_key_bytes", "correct"}, ...]}. Progress goes to stderr.
"""

import os

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics as stats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from concrete import fhe  # noqa: E402


def log(*msg):
    print(*msg, file=sys.stderr, flush=True)


def crypto_params(circuit):
    """The keyset chosen by the optimizer (one PBS => one BSK and one KSK)."""
    keyset = circuit.server.program_info.get_keyset_info()
    (bsk,) = keyset.bootstrap_keys()
    (ksk,) = keyset.keyswitch_keys()
    return {
        "lwe_dimension": bsk.input_lwe_dimension(),
        "glwe_dimension": bsk.glwe_dimension(),
        "polynomial_size": bsk.polynomial_size(),
        "pbs_base_log": bsk.base_log(),
        "pbs_level": bsk.level(),
        "ks_base_log": ksk.base_log(),
        "ks_level": ksk.level(),
        "glwe_noise_std": bsk.variance() ** 0.5,  # relative to the torus (q = 2^64)
        "lwe_noise_std": ksk.variance() ** 0.5,
        "secret_key_dimensions": [sk.dimension() for sk in keyset.secret_keys()],
    }


def compile_chain(tables, bits, p_error):
    """Compile x -> T_k[...T_1[x]]: len(tables) table lookups, one PBS each."""

    def chain(x):
        for table in tables:
            x = table[x]
        return x

    config = fhe.Configuration(
        p_error=p_error,  # per PBS; with global_p_error=None concrete sets the global bound to 1
        global_p_error=None,
        parameter_selection_strategy=fhe.ParameterSelectionStrategy.MULTI,
        loop_parallelize=False,
        dataflow_parallelize=False,
        auto_parallelize=False,
        enable_tlu_fusing=False,  # else concrete fuses a chain of lookups into one
        use_gpu=False,
        use_insecure_key_cache=False,
    )
    return fhe.Compiler(chain, {"x": "encrypted"}).compile(range(2**bits), config)


def time_runs(circuit, enc, eval_keys, repeat, expected):
    """One untimed warm-up, then `repeat` timed server runs; returns (ms list, cpu/wall, ok)."""
    out = circuit.server.run(enc, evaluation_keys=eval_keys)
    ok = circuit.decrypt(out) == expected
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = circuit.server.run(enc, evaluation_keys=eval_keys)
        times.append((time.perf_counter() - t0) * 1e3)
        ok = ok and circuit.decrypt(out) == expected  # decrypt is negligible next to a PBS
    cpu_over_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return times, cpu_over_wall, bool(ok)


def keyset(circuit):
    return circuit.server.program_info.get_keyset_info().serialize()


def apply(tables, x):
    for table in tables:
        x = table[x]
    return x


def marginal_pbs(base, luts, tables, x, bits, p_error, repeat):
    """Marginal ms of one PBS: (t_K - t_j) / (K - j) for chains of K and j lookups sharing keys.

    Each concrete server.run builds a fresh runtime context that converts the bootstrap
    key to the Fourier domain, so a 1-lookup run is "one PBS + per-call overhead"; the
    difference of two chains cancels it. Usually the K-chain gets the same keys as the
    1-lookup circuit (j = 1). A PBS fed by a PBS output can get slightly different
    parameters than one fed by a fresh encryption (6 bits: n = 950 vs 944); then the
    K-chain gets its own keys and the 2-chain is the baseline (j = 2).
    Returns (ms, correct, params of the chains) or None.
    """
    k = len(luts)
    if k < 2:
        return None
    longer = compile_chain(luts, bits, p_error)
    if keyset(longer) == keyset(base):
        j, short = 1, base
        longer.keys = base.keys
    else:
        short = compile_chain(luts[:2], bits, p_error)
        if k < 3 or keyset(short) != keyset(longer):
            log(f"[peer] {bits} bits: chains got differing parameters; no marginal PBS time")
            return None
        log(f"[peer] {bits} bits: chained PBS get other parameters; keygen for the chain")
        j = 2
        longer.keygen(force=True)
        short.keys = longer.keys
    eval_keys = longer.keys.evaluation
    enc = longer.encrypt(x)
    # Short and long chains alternate and their minima are compared, so that load on the
    # machine (which only ever adds time) cancels instead of drifting between the two.
    short_times, long_times, ok = [], [], True
    for _ in range(repeat):
        t, _, s_ok = time_runs(short, enc, eval_keys, 1, apply(tables[:j], x))
        short_times += t
        t, _, l_ok = time_runs(longer, enc, eval_keys, 1, apply(tables, x))
        long_times += t
        ok = ok and s_ok and l_ok
    return (min(long_times) - min(short_times)) / (k - j), ok, crypto_params(longer)


def bench(bits, p_error, repeat, chain, rng):
    size = 2**bits
    tables = [rng.permutation(size) for _ in range(max(chain, 1))]
    luts = [fhe.LookupTable([int(v) for v in t]) for t in tables]

    t0 = time.perf_counter()
    circuit = compile_chain(luts[:1], bits, p_error)
    compile_s = time.perf_counter() - t0

    t0, cpu0 = time.perf_counter(), time.process_time()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - t0
    keygen_cpu_over_wall = (time.process_time() - cpu0) / keygen_s
    eval_keys = circuit.keys.evaluation

    x = int(rng.integers(size))
    enc = circuit.encrypt(x)
    times, cpu_over_wall, correct = time_runs(circuit, enc, eval_keys, repeat, tables[0][x])

    marginal = marginal_pbs(circuit, luts, tables, x, bits, p_error, repeat)
    pbs_ms_marginal, chain_ok, marginal_params = marginal or (None, True, None)
    correct = correct and chain_ok

    st = circuit.statistics
    result = {
        "bits": bits,
        "run_ms_min": min(times),
        "run_ms_median": stats.median(times),
        "run_cpu_over_wall": round(cpu_over_wall, 3),
        "pbs_ms_marginal": pbs_ms_marginal,
        "marginal_params": marginal_params,
        "chain": chain,
        "keygen_s": keygen_s,
        "keygen_cpu_over_wall": round(keygen_cpu_over_wall, 3),
        "compile_s": compile_s,
        "p_error": circuit.p_error,
        "p_error_requested": p_error,
        "global_p_error": circuit.global_p_error,
        "params": crypto_params(circuit),
        "statistics": {
            "complexity": circuit.complexity,
            "programmable_bootstrap_count": st["programmable_bootstrap_count"],
            "key_switch_count": st["key_switch_count"],
            "size_of_bootstrap_keys": st["size_of_bootstrap_keys"],
            "size_of_keyswitch_keys": st["size_of_keyswitch_keys"],
            "size_of_secret_keys": st["size_of_secret_keys"],
            "size_of_inputs": st["size_of_inputs"],
            "security_level": int(circuit.configuration.security_level.value),
        },
        "eval_key_bytes": len(eval_keys.serialize()),
        "correct": bool(correct),
    }
    log(f"[peer] {bits} bits: run min {result['run_ms_min']:.2f} ms, marginal PBS "
        f"{pbs_ms_marginal if pbs_ms_marginal is None else round(pbs_ms_marginal, 2)} ms, keygen {keygen_s:.2f} s, "
        f"p_error {circuit.p_error:.3g}, correct={result['correct']}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--p-error", type=float, default=2.0**-40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--chain", type=int, default=4,
                    help="also time a chain of this many lookups (same keys) to get the marginal "
                         "cost of one PBS without concrete's per-call overhead; 0 or 1: skip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # One core for everything (concrete may start helper threads; they share it).
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    # concrete's native code may write to fd 1; keep stdout for the JSON only.
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    rng = np.random.default_rng(args.seed)
    results = [bench(b, args.p_error, args.repeat, args.chain, rng) for b in args.bits]
    report = {"peer": f"concrete-python {fhe.__version__}", "threads": 1, "pinned_cpu": cpu,
              "results": results}
    if args.json:
        real_stdout.write(json.dumps(report) + "\n")
    else:
        for r in results:
            real_stdout.write(
                f"{r['bits']} bits: run {r['run_ms_min']:.2f} ms (median {r['run_ms_median']:.2f}), "
                f"keygen {r['keygen_s']:.2f} s, p_error {r['p_error']:.3g}, "
                f"eval keys {r['eval_key_bytes'] / 2**20:.1f} MiB, params {r['params']}\n"
            )
    real_stdout.flush()


if __name__ == "__main__":
    main()
