"""Compiler benchmark: compile time and the overhead of running a compiled circuit.

The overhead ratio is the run time of a circuit of 64 independent 4-bit lookups
(``circuit.server.run``, i.e. offsets, table preparation, the batched engine call and
result slicing) divided by the time of the engine's raw batched programmable bootstrap of
64 ciphertexts with the same keys, measured in the same run (best of ``--repeat``).
The target is <= 1.1.

Usage::

    PYTHONPATH=. python benchmarks/bench_compiler.py [--repeat 5] [--n-jobs 1]
"""

import argparse
import time

import numpy as np


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    import fheml
    from fheml._core import LweCiphertext

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    inputset = [rng.integers(0, 16, size=64) for _ in range(50)] + [np.full(64, 15),
                                                                  np.zeros(64, int)]
    table = rng.integers(0, 16, size=16)

    def lookups(x):
        return fheml.LookupTable(table)[x]

    def mlp_like(x):
        acc = fheml.round_bit_pattern(x @ rng_w, 6)
        h = np.round(np.tanh((acc - 20) / 16) * 7).astype(np.int64)
        return np.maximum(h, 0) @ rng_w2

    rng_w = rng.integers(-2, 3, size=(64, 8))
    rng_w2 = rng.integers(-2, 3, size=(8, 3))

    compile_times = {}
    for name, fn in (("64 lookups", lookups), ("dense-tanh-dense", mlp_like)):
        start = time.perf_counter()
        circuit = fheml.compile(fn, inputset, n_jobs=args.n_jobs)
        compile_times[name] = time.perf_counter() - start
        print(f"compile {name:18s}: {compile_times[name] * 1e3:8.1f} ms  "
              f"({circuit.statistics['lookups']} lookups, {circuit.max_bit_width} bits, "
              f"lookup precision {circuit.statistics['lookup_precision']})")
    linear = rng.integers(-127, 128, size=(30, 2))
    start = time.perf_counter()
    fheml.compile(lambda x: x @ linear, [rng.integers(0, 256, size=30) for _ in range(100)])
    print(f"compile {'linear 30->2':18s}: {(time.perf_counter() - start) * 1e3:8.1f} ms")

    circuit = fheml.compile(lookups, inputset, n_jobs=args.n_jobs)
    assert circuit.statistics["lookups_by_precision"] == {4: 64}, circuit.statistics
    ek = circuit.keygen()
    x = rng.integers(0, 16, size=64)
    encrypted = circuit.client.encrypt(x)
    np.testing.assert_array_equal(circuit.client.decrypt(circuit.server.run(encrypted, ek)),
                                  table[x])

    # Raw engine: the same 64 ciphertexts, one table, one batched call.
    P = circuit.program.precision
    raw = LweCiphertext(encrypted.values[0].data.reshape(64, -1), ek.key_id)

    def engine():
        ek.programmable_bootstrap(raw, table, input_precision=P, output_precision=P,
                                  n_jobs=args.n_jobs)

    def compiled():
        circuit.server.run(encrypted, ek, n_jobs=args.n_jobs)

    engine()
    compiled()  # warm up
    t_engine, t_circuit = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        t_engine.append(_best(engine, 1))
        t_circuit.append(_best(compiled, 1))
    e, c = min(t_engine), min(t_circuit)
    print(f"engine batched PBS x64 : {e * 1e3:8.1f} ms ({e / 64 * 1e3:.1f} ms per lookup)")
    print(f"circuit run (64 x 4b)  : {c * 1e3:8.1f} ms")
    print(f"overhead ratio         : {c / e:8.3f}  (target <= 1.1)")
    return c / e


if __name__ == "__main__":
    main()
