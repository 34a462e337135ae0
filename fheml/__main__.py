"""Command line: ``fheml`` (or ``python -m fheml``) ``demo | params | bench | save | serve``.

Run ``fheml COMMAND --help`` for the options of each command.
"""

import argparse
import json
import math
import sys
import time
import warnings

__all__ = ["main"]

DATASETS = {"breast_cancer": "classification", "iris": "classification",
            "wine": "classification", "diabetes": "regression"}


def _load(dataset):
    import sklearn.datasets

    return getattr(sklearn.datasets, f"load_{dataset}")(return_X_y=True)


def _split(X, y, classification, test_size=100):
    from sklearn.model_selection import train_test_split

    test_size = min(test_size, len(X) // 3)
    return train_test_split(X, y, test_size=test_size, random_state=0,
                            stratify=y if classification else None)


def _estimator_classes():
    """Every fheml estimator class by name (families that are installed)."""
    import importlib

    classes = {}
    for module in ("fheml.linear_model", "fheml.tree", "fheml.ensemble",
                   "fheml.neural_network"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        classes.update({name: getattr(mod, name) for name in getattr(mod, "__all__", ())})
    return classes


def _parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------ demo ---------

def cmd_demo(args):
    """FHELogisticRegression on breast_cancer: fit, compile, keygen, one encrypted batch."""
    import numpy as np

    from fheml.linear_model import FHELogisticRegression
    from fheml.quantization import FHEMLClipWarning

    X, y = _load("breast_cancer")
    X_train, X_test, y_train, y_test = _split(X, y, True, args.rows)
    model = FHELogisticRegression(n_bits=args.n_bits, solver="newton-cholesky")
    t0 = time.perf_counter()
    model.fit(X_train, y_train)
    t1 = time.perf_counter()
    circuit = model.compile(X_train)
    t2 = time.perf_counter()
    circuit.keygen()
    t3 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FHEMLClipWarning)  # held-out rows; counted below
        y_enc = model.predict(X_test, fhe="execute")
        t4 = time.perf_counter()
        y_clear = model.predict(X_test)
    y_float = model.sklearn_model_.predict(X_test)
    print(f"FHELogisticRegression(n_bits={args.n_bits}) on breast_cancer: "
          f"{len(X_train)} training rows, {len(X_test)} held-out rows encrypted in one batch")
    print(f"circuit: {circuit.max_bit_width}-bit scores, {circuit.statistics['lookups']} "
          f"lookups; {circuit.parameters}")
    print(f"fit {t1 - t0:.3f} s, compile {t2 - t1:.3f} s, keygen {t3 - t2:.3f} s")
    print(f"accuracy: encrypted {np.mean(y_enc == y_test):.4f}, clear quantized "
          f"{np.mean(y_clear == y_test):.4f}, float scikit-learn {np.mean(y_float == y_test):.4f}")
    print(f"encrypted == clear quantized on {100 * np.mean(y_enc == y_clear):.1f}% of rows")
    print(f"latency: {t4 - t3:.3f} s for the batch (encrypt + run + decrypt), "
          f"{1e3 * (t4 - t3) / len(X_test):.3f} ms per row")
    return 0


# ---------------------------------------------------------------------- params ---------

def _mb(nbytes):
    return f"{nbytes / 1e6:.1f} MB"


def cmd_params(args):
    """Parameters, key sizes and modelled cost for a precision and p_error."""
    from fheml._core import select_parameters

    p_error = args.p_error if args.p_error is not None else 2.0 ** args.log2_p_error
    params = select_parameters(args.precision, p_error, args.norm2,
                               bootstrap=not args.no_bootstrap)
    info = params.to_dict()
    info.update(log2_p_fail=math.log2(params.p_fail()) if params.p_fail() > 0 else None)
    if params.has_bootstrap:
        info.update(cost_mops=params.cost / 1e6, bootstrapping_key_bytes=params.bsk_bytes,
                    keyswitching_key_bytes=params.ksk_bytes,
                    evaluation_key_upload_bytes=params.seeded_bsk_bytes
                    + params.seeded_ksk_bytes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(params)
    print(f"  failure probability per {'lookup' if params.has_bootstrap else 'decryption'}: "
          f"2^{info['log2_p_fail']:.1f} (target 2^{math.log2(p_error):.1f})")
    if params.has_bootstrap:
        print(f"  modelled cost: {params.cost / 1e6:.0f} Mop per lookup (keyswitch + bootstrap)")
        print(f"  keys in memory: bootstrapping {_mb(params.bsk_bytes)}, keyswitching "
              f"{_mb(params.ksk_bytes)}")
        print(f"  evaluation keys uploaded (seeded): "
              f"{_mb(params.seeded_bsk_bytes + params.seeded_ksk_bytes)}")
    else:
        print("  no bootstrapping: no evaluation key to upload")
    return 0


# ----------------------------------------------------------------------- bench ---------

def cmd_bench(args):
    """One lookup batch on the engine, and one encrypted model batch."""
    import numpy as np

    from fheml._core import SecretKeys, select_parameters
    from fheml.linear_model import FHELogisticRegression

    params = select_parameters(args.precision, 2.0 ** -40)
    t0 = time.perf_counter()
    sk = SecretKeys.generate(params)
    ek = sk.evaluation_keys()
    t1 = time.perf_counter()
    size = 1 << args.precision
    table = (np.arange(size) * 3 + 1) % size
    x = np.arange(args.lookups) % size
    ct = sk.encrypt(x, precision=args.precision)
    t2 = time.perf_counter()
    out = ek.programmable_bootstrap(ct, table, input_precision=args.precision,
                                    output_precision=args.precision, n_jobs=args.n_jobs)
    t3 = time.perf_counter()
    ok = np.array_equal(sk.decrypt(out, precision=args.precision), table[x])
    print(f"engine: {args.precision}-bit lookups, {params}")
    print(f"  keygen {t1 - t0:.2f} s; {args.lookups} lookups in {t3 - t2:.3f} s "
          f"({1e3 * (t3 - t2) / args.lookups:.2f} ms each, n_jobs={args.n_jobs}); "
          f"{'correct' if ok else 'WRONG RESULTS'}")
    X, y = _load("breast_cancer")
    X_train, X_test, y_train, _ = _split(X, y, True, args.rows)
    model = FHELogisticRegression(solver="newton-cholesky").fit(X_train, y_train)
    model.compile(X_train).keygen()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t4 = time.perf_counter()
        y_enc = model.predict(X_test, fhe="execute")
        t5 = time.perf_counter()
        same = np.array_equal(y_enc, model.predict(X_test))
    print(f"model: FHELogisticRegression on breast_cancer, batch of {len(X_test)} rows in "
          f"{t5 - t4:.3f} s ({1e3 * (t5 - t4) / len(X_test):.3f} ms per row); "
          f"{'equal to' if same else 'DIFFERENT FROM'} the clear run")
    return 0 if ok and same else 1


# ------------------------------------------------------------------------ save ---------

def cmd_save(args):
    """Fit a model on a bundled dataset and save it for ``fheml serve``."""
    from fheml.deployment import FHEModelDev

    classes = _estimator_classes()
    if args.model not in classes:
        print(f"unknown model {args.model!r}; available: {', '.join(sorted(classes))}",
              file=sys.stderr)
        return 2
    cls = classes[args.model]
    params = {"n_bits": args.n_bits}
    if args.model == "FHELogisticRegression":
        params["solver"] = "newton-cholesky"  # converges on the raw features
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--param expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[key] = _parse_value(value)
    X, y = _load(args.dataset)
    X_train, X_test, y_train, y_test = _split(X, y, DATASETS[args.dataset] == "classification")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence, clipping of held-out rows
        model = cls(**params).fit(X_train, y_train)
        score = model.score(X_test, y_test)
    model_id = FHEModelDev(args.model_dir, model).save(overwrite=args.overwrite)
    print(f"saved {args.model} fitted on {args.dataset} ({len(X_train)} rows) to "
          f"{args.model_dir} (model id {model_id[:16]}...)")
    print(f"score on {len(X_test)} held-out rows (clear): {score:.4f}")
    print(f"serve it with: fheml serve {args.model_dir} --port 8000")
    return 0


# ----------------------------------------------------------------------- serve ---------

def cmd_serve(args):
    """Serve a saved model over HTTP."""
    from fheml.deployment.http_server import ServiceLimits, serve

    mib = 1 << 20
    limits = ServiceLimits(max_request_bytes=args.max_request_mib * mib,
                           max_key_bytes=args.max_key_mib * mib, max_keys=args.max_keys,
                           max_key_store_bytes=args.max_key_store_mib * mib,
                           max_concurrent_runs=args.max_concurrent_runs)

    def ready(host, port):
        print(f"fheml serve: {args.model_dir} on http://{host}:{port}", flush=True)

    serve(args.model_dir, host=args.host, port=args.port, limits=limits, n_jobs=args.n_jobs,
          log_level=args.log_level, ready=ready)
    return 0


# ------------------------------------------------------------------------ main ---------

def _parser():
    parser = argparse.ArgumentParser(
        prog="fheml", description="Machine learning on encrypted data (TFHE).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="fit, compile, keygen and predict encrypted (breast_cancer)",
                       description=cmd_demo.__doc__)
    p.add_argument("--n-bits", type=int, default=8, help="bits of inputs and weights (8)")
    p.add_argument("--rows", type=int, default=100, help="held-out rows in the batch (100)")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("params", help="parameters, key sizes and cost for a precision",
                       description=cmd_params.__doc__)
    p.add_argument("--precision", type=int, default=4, help="message bits (4)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--p-error", type=float, help="failure probability per lookup")
    group.add_argument("--log2-p-error", type=float, default=-40.0,
                       help="log2 of the failure probability per lookup (-40)")
    p.add_argument("--norm2", type=float, default=1.0,
                   help="2-norm of the weights feeding a lookup (1.0)")
    p.add_argument("--no-bootstrap", action="store_true",
                   help="circuit without lookups (linear models)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_params)

    p = sub.add_parser("bench", help="quick benchmark of the engine and one model",
                       description=cmd_bench.__doc__)
    p.add_argument("--precision", type=int, default=4, help="lookup bits (4)")
    p.add_argument("--lookups", type=int, default=16, help="lookups in the batch (16)")
    p.add_argument("--rows", type=int, default=100, help="rows of the model batch (100)")
    p.add_argument("--n-jobs", type=int, default=-1, help="threads (-1: all cores)")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("save", help="fit a model on a bundled dataset and save it",
                       description=cmd_save.__doc__)
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("model_dir", help="directory for server.fheml and client.fheml")
    p.add_argument("--model", default="FHELogisticRegression",
                   help="estimator class name (FHELogisticRegression)")
    p.add_argument("--n-bits", type=int, default=8, help="bits of inputs and weights (8)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="estimator parameter (JSON value), repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    p.set_defaults(run=cmd_save)

    p = sub.add_parser("serve", help="serve a saved model over HTTP",
                       description=cmd_serve.__doc__ + " Endpoints: GET /health, GET /model, "
                       "GET /client, POST /keys, DELETE /keys/{key_id}, POST /predict "
                       "(see docs/deployment.md).")
    p.add_argument("model_dir", help="directory written by FHEModelDev.save or fheml save")
    p.add_argument("--host", default="127.0.0.1", help="interface (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port, 0 for any free one (8000)")
    p.add_argument("--n-jobs", type=int, default=1, help="threads per evaluation (1)")
    p.add_argument("--max-request-mib", type=int, default=64,
                   help="largest encrypted request, MiB (64)")
    p.add_argument("--max-key-mib", type=int, default=2048,
                   help="largest evaluation key upload, MiB (2048)")
    p.add_argument("--max-keys", type=int, default=16, help="key sets kept at once (16)")
    p.add_argument("--max-key-store-mib", type=int, default=8192,
                   help="memory of the key sets kept, MiB (8192)")
    p.add_argument("--max-concurrent-runs", type=int, default=2,
                   help="evaluations at the same time (2)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=cmd_serve)
    return parser


def main(argv=None):
    """Entry point of the ``fheml`` command."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as exc:
        print(f"fheml {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
