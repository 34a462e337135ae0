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
imported and loop/dataflow/auto parallelization are off; the JSON reports
cpu-time/wall-time during the runs so this can be checked.

Output (``--json``): {"peer": "concrete-python X", "threads": 1, "results": [
{"bits", "run_ms_min", "run_ms_median", "run_cpu_over_wall", "keygen_s", "compile_s",
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


def bench(bits, p_error, repeat, rng):
    size = 2**bits
    table_values = rng.permutation(size)
    table = fhe.LookupTable([int(v) for v in table_values])

    def lookup(x):
        return table[x]

    compiler = fhe.Compiler(lookup, {"x": "encrypted"})
    config = fhe.Configuration(
        p_error=p_error,
        global_p_error=None,
        parameter_selection_strategy=fhe.ParameterSelectionStrategy.MULTI,
        loop_parallelize=False,
        dataflow_parallelize=False,
        auto_parallelize=False,
        use_gpu=False,
        use_insecure_key_cache=False,
    )
    t0 = time.perf_counter()
    circuit = compiler.compile(range(size), config)
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - t0
    eval_keys = circuit.keys.evaluation

    x = int(rng.integers(size))
    enc = circuit.encrypt(x)
    out = circuit.server.run(enc, evaluation_keys=eval_keys)  # warm-up, not timed
    correct = circuit.decrypt(out) == table_values[x]

    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = circuit.server.run(enc, evaluation_keys=eval_keys)
        times.append((time.perf_counter() - t0) * 1e3)
        correct = correct and circuit.decrypt(out) == table_values[x]
    # decrypt is included in this ratio but is negligible next to the PBS
    cpu_over_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    st = circuit.statistics
    result = {
        "bits": bits,
        "run_ms_min": min(times),
        "run_ms_median": stats.median(times),
        "run_cpu_over_wall": round(cpu_over_wall, 3),
        "keygen_s": keygen_s,
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
            "security_level": int(config.security_level.value),
        },
        "eval_key_bytes": len(eval_keys.serialize()),
        "correct": bool(correct),
    }
    log(f"[peer] {bits} bits: run min {result['run_ms_min']:.2f} ms, keygen {keygen_s:.2f} s, "
        f"p_error {circuit.p_error:.3g}, correct={result['correct']}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--p-error", type=float, default=2.0**-40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # concrete's native code may write to fd 1; keep stdout for the JSON only.
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    rng = np.random.default_rng(args.seed)
    results = [bench(b, args.p_error, args.repeat, rng) for b in args.bits]
    report = {"peer": f"concrete-python {fhe.__version__}", "threads": 1, "results": results}
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
