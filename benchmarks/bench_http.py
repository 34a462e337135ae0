"""Benchmark of the HTTP inference service against the same work in one process.

    python benchmarks/bench_http.py                         # batches of 1 and 100 rows
    python benchmarks/bench_http.py --requests 40 --lookup-bits 4

A saved FHELogisticRegression (breast_cancer, 30 features, n_bits=8), then a saved
FHEDecisionTreeClassifier (``--tree-depth``), are served by ``fheml serve`` in a separate
process on 127.0.0.1.  For each batch size it measures a
full client request (quantize + encrypt + POST /predict + decrypt + post-process):
latency p50 / p95 over sequential requests, and requests per second with 1 and 2
concurrent clients.  The same work in one process (FHEModelClient + FHEModelServer, no
HTTP, keys already loaded) is measured the same way.  Then the evaluation-key upload: the
linear model's keys, and the keys of a circuit with one lookup of ``--lookup-bits`` bits
(what a tree or an MLP needs), size and time of ``POST /keys`` (which includes the server's
expansion of the keys).  Times are wall-clock on a machine that may be shared.

With ``FHEML_PEER_PYTHON`` naming an interpreter with concrete-ml, the same model goes
through Concrete ML's deployment API in one process (``peer_deployment_concrete.py``;
Concrete ML has no HTTP service) and the in-process latencies are compared.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fheml  # noqa: E402
from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer  # noqa: E402
from fheml.deployment.http_client import HTTPClient  # noqa: E402
from fheml.linear_model import FHELogisticRegression  # noqa: E402
from fheml.quantization import FHEMLClipWarning  # noqa: E402
from fheml.tree import FHEDecisionTreeClassifier  # noqa: E402


def start_service(model_dir, *options):
    proc = subprocess.Popen([sys.executable, "-m", "fheml", "serve", str(model_dir), "--port",
                             "0", "--log-level", "warning", *options],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the service did not start: {line}")
    return proc, line.split()[-1]


def measure(predict, X, n_requests, concurrency):
    """Latencies (s) of sequential requests and requests/s with ``concurrency`` clients."""
    predict(X)  # warm-up
    latencies = []
    for _ in range(n_requests):
        t0 = time.perf_counter()
        predict(X)
        latencies.append(time.perf_counter() - t0)
    threads = [threading.Thread(target=lambda: [predict(X) for _ in range(n_requests)])
               for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"p50_ms": 1e3 * np.percentile(lat, 50), "p95_ms": 1e3 * np.percentile(lat, 95),
            "rps_1": n_requests / lat.sum(), f"rps_{concurrency}":
            concurrency * n_requests / elapsed}


def bench_model(model_dir, X, n_requests, *options):
    """HTTP and in-process measures of batches of 1 and 100 rows of ``X``."""
    results = {}
    proc, url = start_service(model_dir, *options)
    try:
        http = HTTPClient(url, model_dir)
        http.upload_keys()
        local_client = FHEModelClient(model_dir)
        local_server = FHEModelServer(model_dir)
        keys = local_server.load_evaluation_keys(local_client.get_serialized_evaluation_keys())

        def in_process(rows):
            answer = local_server.run(local_client.quantize_encrypt_serialize(rows), keys)
            return local_client.deserialize_decrypt_dequantize(answer)

        for batch in (1, 100):
            rows = X[:batch]
            assert np.array_equal(http.predict(rows), in_process(rows))
            request = local_client.quantize_encrypt_serialize(rows)
            results[batch] = {
                "http": measure(http.predict, rows, n_requests, 2),
                "in_process": measure(in_process, rows, n_requests, 2),
                "request_bytes": len(request),
                "answer_bytes": len(local_server.run(request, keys)),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return results


def upload_once(model_dir, *options):
    proc, url = start_service(model_dir, *options)
    try:
        return upload(url, model_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def print_batches(batches):
    print(f"{'batch':>5} {'mode':>10} {'p50 ms':>9} {'p95 ms':>9} {'req/s 1':>9} "
          f"{'req/s 2':>9}  request/answer bytes")
    for batch, r in batches.items():
        for mode in ("http", "in_process"):
            m = r[mode]
            print(f"{batch:>5} {mode:>10} {m['p50_ms']:>9.2f} {m['p95_ms']:>9.2f} "
                  f"{m['rps_1']:>9.1f} {m['rps_2']:>9.1f}  "
                  f"{r['request_bytes']}/{r['answer_bytes']}")
        ratio = r["http"]["p50_ms"] / r["in_process"]["p50_ms"]
        print(f"{'':>5} {'http/in-process p50':>20}: {ratio:.2f}")


def upload(url, model_dir):
    http = HTTPClient(url, model_dir)
    keys = http.client.get_serialized_evaluation_keys()
    t0 = time.perf_counter()
    http.upload_keys()
    return len(keys), time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--lookup-bits", type=int, default=4)
    parser.add_argument("--tree-depth", type=int, default=4)
    parser.add_argument("--tree-requests", type=int, default=5,
                        help="requests per measure for the tree (0: no tree)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore", FHEMLClipWarning)
    root = pathlib.Path(tempfile.mkdtemp())
    X, y = load_breast_cancer(return_X_y=True)
    model = FHELogisticRegression(solver="newton-cholesky").fit(X[:469], y[:469])
    FHEModelDev(root / "linear", model).save()

    results = {"batches": bench_model(root / "linear", X[469:], args.requests)}
    size, seconds = upload_once(root / "linear")
    results["keys_linear"] = {"bytes": size, "upload_s": seconds}

    if args.tree_requests:
        tree = FHEDecisionTreeClassifier(max_depth=args.tree_depth, random_state=0)
        FHEModelDev(root / "tree", tree.fit(X[:469], y[:469])).save()
        results["tree"] = {"depth": args.tree_depth,
                           "lookups_per_sample": tree.fhe_circuit.statistics["lookups"],
                           "batches": bench_model(root / "tree", X[469:], args.tree_requests,
                                                  "--max-key-mib", "4096")}
        size, seconds = upload_once(root / "tree", "--max-key-mib", "4096")
        results["tree"]["keys"] = {"bytes": size, "upload_s": seconds}

    bits = args.lookup_bits

    @fheml.compiler({"x": "encrypted"})
    def one_lookup(x):
        return fheml.univariate(lambda v: (v * 3 + 1) % (1 << bits))(x)

    circuit = one_lookup.compile(np.arange(1 << bits))
    FHEModelDev(root / "lookup", circuit).save()
    proc, url = start_service(root / "lookup", "--max-key-mib", "4096")
    try:
        size, seconds = upload(url, root / "lookup")
        results["keys_lookup"] = {"bits": bits, "precision": circuit.parameters.precision,
                                  "bytes": size, "upload_s": seconds}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print("FHELogisticRegression, breast_cancer (30 features), fheml serve on 127.0.0.1")
    print_batches(results["batches"])
    t = results.get("tree")
    if t:
        print(f"FHEDecisionTreeClassifier(max_depth={t['depth']}), breast_cancer, "
              f"{t['lookups_per_sample']} lookups per sample")
        print_batches(t["batches"])
        print(f"evaluation keys, tree: {t['keys']['bytes'] / 1e6:.1f} MB, upload + "
              f"server-side load {t['keys']['upload_s']:.2f} s")
    k = results["keys_linear"]
    print(f"evaluation keys, linear model: {k['bytes']} B, upload {1e3 * k['upload_s']:.1f} ms")
    k = results["keys_lookup"]
    print(f"evaluation keys, one {k['bits']}-bit lookup (precision {k['precision']}): "
          f"{k['bytes'] / 1e6:.1f} MB, upload + server-side load {k['upload_s']:.2f} s")
    peer = os.environ.get("FHEML_PEER_PYTHON")
    if peer:
        out = subprocess.run([peer, str(REPO / "benchmarks" / "peer_deployment_concrete.py"),
                              str(args.requests)], capture_output=True, text=True,
                             timeout=3600, check=True)
        results["peer"] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peer (Concrete ML deployment API, in one process; evaluation keys "
              f"{results['peer']['eval_key_bytes']} B):")
        for batch, r in results["batches"].items():
            theirs = results["peer"]["batches"][str(batch)]
            how = "one call" if theirs["batched"] else f"{batch} one-row calls"
            ratio = r["in_process"]["p50_ms"] / theirs["p50_ms"]
            print(f"  batch {batch} ({how}): p50 {theirs['p50_ms']:.2f} ms, p95 "
                  f"{theirs['p95_ms']:.2f} ms; fheml in-process / peer p50 = {ratio:.3g} "
                  f"(1/{1 / ratio:.0f}), fheml over HTTP / peer p50 = "
                  f"{r['http']['p50_ms'] / theirs['p50_ms']:.3g} "
                  f"(1/{theirs['p50_ms'] / r['http']['p50_ms']:.0f})")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
