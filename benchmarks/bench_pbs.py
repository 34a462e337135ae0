"""Benchmark of the TFHE engine: parameters, KS and PBS latency, throughput, keygen, key sizes.

    python benchmarks/bench_pbs.py                      # p = 1..8 at p_error 2^-40
    python benchmarks/bench_pbs.py --bits 4 6 --repeat 7
    FHEML_PEER_PYTHON=/work/peer-venv/bin/python python benchmarks/bench_pbs.py --bits 4 6

With FHEML_PEER_PYTHON naming the interpreter of an installed concrete-python, the same
one-lookup circuit is timed there in the same run (benchmarks/peer_concrete.py, one thread)
and the ratios are printed.  The peer reports two times: one ``server.run`` of a one-lookup
circuit (what a user waits for one lookup) and the marginal cost of one more lookup in a chain
(its KS + PBS core without per-call overhead); both ratios are printed.

Times are CPU seconds of the measuring thread (``time.thread_time``) for the single-thread
figures, so that other load on this shared machine inflates them less; throughput with two
threads is wall-clock.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from fheml._core import SecretKeys, _kernels, select_parameters


def _best(fn, repeat, clock=time.thread_time):
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times), float(np.median(times))


def bench_one(p, p_error, repeat, batch, rounds):
    params = select_parameters(p, p_error=p_error)
    t = time.perf_counter()
    sk = SecretKeys.generate(params)
    ek = sk.evaluation_keys()
    keygen_s = time.perf_counter() - t
    seeded = len(ek.to_bytes())
    rng = np.random.default_rng(p)
    table = rng.integers(0, 1 << p, 1 << p)
    one = sk.encrypt([int(rng.integers(0, 1 << p))])
    out = ek.programmable_bootstrap(one, table, n_jobs=1, group=1)  # warm-up + check
    assert sk.decrypt(out)[0] == table[sk.decrypt(one)[0]]
    ks_min, _ = _best(lambda: _kernels.keyswitch_batch(ek.ksk, params.ks_base_log, params.ks_level,
                                                       one.data.reshape(1, -1), group=1), repeat)
    total_min, total_med = _best(lambda: ek.programmable_bootstrap(one, table, n_jobs=1, group=1), repeat)
    wall_min, _ = _best(lambda: ek.programmable_bootstrap(one, table, n_jobs=1, group=1), repeat,
                        clock=time.perf_counter)
    m = rng.integers(0, 1 << p, batch)
    cts = sk.encrypt(m)
    # a vector of lookups in one call: one thread (CPU and wall) then two threads (wall),
    # interleaved so that machine load affects both alike; minima of `rounds`
    one_cpu = one_wall = two_wall = float("inf")
    for _ in range(rounds):
        t, c = time.perf_counter(), time.thread_time()
        res = ek.programmable_bootstrap(cts, table, n_jobs=1)
        one_cpu = min(one_cpu, time.thread_time() - c)
        one_wall = min(one_wall, time.perf_counter() - t)
        assert np.array_equal(sk.decrypt(res), table[m])
        t = time.perf_counter()
        res = ek.programmable_bootstrap(cts, table, n_jobs=2)
        two_wall = min(two_wall, time.perf_counter() - t)
        assert np.array_equal(sk.decrypt(res), table[m])
    return {
        "bits": p,
        "params": str(params),
        "n": params.lwe_dimension, "k": params.glwe_dimension, "N": params.polynomial_size,
        "pbs": f"2^{params.pbs_base_log}x{params.pbs_level}",
        "ks": f"2^{params.ks_base_log}x{params.ks_level}",
        "log2_p_fail": round(params.log2_p_fail(), 2),
        "ks_ms": ks_min * 1e3,
        "ks_pbs_ms": total_min * 1e3,
        "ks_pbs_ms_median": total_med * 1e3,
        "ks_pbs_wall_ms": wall_min * 1e3,
        "pbs_ms": (total_min - ks_min) * 1e3,
        "marginal_ms_1_thread_cpu": one_cpu / batch * 1e3,
        "marginal_ms_1_thread_wall": one_wall / batch * 1e3,
        "lookups_per_s_1_thread": batch / one_wall,
        "lookups_per_s_2_threads": batch / two_wall,
        "two_thread_speedup": one_wall / two_wall,
        "keygen_s": keygen_s,
        "bsk_mb": params.bsk_bytes / 1e6,
        "ksk_mb": params.ksk_bytes / 1e6,
        "seeded_bsk_mb": params.seeded_bsk_bytes / 1e6,
        "seeded_ksk_mb": params.seeded_ksk_bytes / 1e6,
        "upload_mb": seeded / 1e6,
        "server_memory_mb": ek.nbytes / 1e6,
    }


def run_peer(bits, p_error, repeat):
    python = os.environ.get("FHEML_PEER_PYTHON")
    if not python or not bits:
        return {}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_concrete.py")
    cmd = [python, script, "--bits", *map(str, bits), "--p-error", repr(p_error),
           "--repeat", str(repeat), "--json"]
    print(f"# peer: {' '.join(cmd)}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"# peer failed: {exc}", file=sys.stderr)
        return {}
    data = json.loads(proc.stdout)
    return {r["bits"]: r | {"peer": data.get("peer")} for r in data["results"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--peer-bits", type=int, nargs="*", default=None,
                    help="bit widths to time on the peer (default: those of --bits up to 6; "
                         "8 bits needs ~16 GB and ~5 min there)")
    ap.add_argument("--p-error", type=float, default=2.0**-40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args()
    peer_bits = a.peer_bits if a.peer_bits is not None else [b for b in a.bits if b in (4, 6)]
    print(f"# fheml engine, kernels={_kernels.simd_level()}, load {os.getloadavg()}, p_error=2^{np.log2(a.p_error):.0f}")
    rows = []
    for p in a.bits:
        batch = 64 if p <= 5 else 16 if p <= 6 else 4
        r = bench_one(p, a.p_error, a.repeat if p <= 6 else 2, batch, 3)
        rows.append(r)
        print(f"p={p}: {r['params']}", flush=True)
        print(f"     KS {r['ks_ms']:.2f} ms, PBS {r['pbs_ms']:.2f} ms, KS+PBS {r['ks_pbs_ms']:.2f} ms "
              f"(median {r['ks_pbs_ms_median']:.2f}; wall min {r['ks_pbs_wall_ms']:.2f}), "
              f"keygen {r['keygen_s']:.2f} s", flush=True)
        print(f"     batch of {batch} in one call: {r['marginal_ms_1_thread_cpu']:.2f} ms CPU "
              f"({r['marginal_ms_1_thread_wall']:.2f} wall) per lookup on 1 thread; "
              f"{r['lookups_per_s_1_thread']:.1f} lookups/s (1 thread), "
              f"{r['lookups_per_s_2_threads']:.1f} (2 threads, x{r['two_thread_speedup']:.2f})",
              flush=True)
        print(f"     BSK {r['bsk_mb']:.0f} MB (seeded {r['seeded_bsk_mb']:.1f}), KSK {r['ksk_mb']:.0f} MB "
              f"(seeded {r['seeded_ksk_mb']:.2f}); upload {r['upload_mb']:.1f} MB, server memory "
              f"{r['server_memory_mb']:.0f} MB", flush=True)
    peer = run_peer(peer_bits, a.p_error, a.repeat)
    for r in rows:
        q = peer.get(r["bits"])
        if not q:
            continue
        r["peer"] = {k: q.get(k) for k in ("peer", "run_ms_min", "pbs_ms_marginal", "keygen_s",
                                             "eval_key_bytes", "params", "p_error")}
        # the peer reports wall-clock minima: compare with ours
        r["ratio_vs_peer_run"] = r["ks_pbs_wall_ms"] / q["run_ms_min"]
        if q.get("pbs_ms_marginal"):
            r["ratio_vs_peer_marginal"] = r["ks_pbs_wall_ms"] / q["pbs_ms_marginal"]
            # both sides: a vector of lookups in one call, one thread
            r["marginal_ratio_vs_peer"] = r["marginal_ms_1_thread_wall"] / q["pbs_ms_marginal"]
        r["key_upload_ratio"] = r["upload_mb"] * 1e6 / q["eval_key_bytes"]
        print(f"p={r['bits']} vs {q.get('peer')}: one lookup {r['ks_pbs_wall_ms']:.1f} ms (wall) vs {q['run_ms_min']:.1f} ms "
              f"-> ratio {r['ratio_vs_peer_run']:.2f}; vs its marginal KS+PBS {q.get('pbs_ms_marginal', float('nan')):.1f} ms "
              f"-> ratio {r.get('ratio_vs_peer_marginal', float('nan')):.2f}; marginal vs marginal "
              f"{r['marginal_ms_1_thread_wall']:.1f} ms -> ratio {r.get('marginal_ratio_vs_peer', float('nan')):.2f}; keygen {r['keygen_s']:.1f} s vs "
              f"{q['keygen_s']:.1f} s; key upload {r['upload_mb']:.1f} MB vs {q['eval_key_bytes'] / 1e6:.0f} MB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
