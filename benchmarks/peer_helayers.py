"""Peer benchmark: IBM HElayers (pyhelayers, CKKS on SEAL) logistic regression inference.

Run with an interpreter that has pyhelayers (a separate venv: ``python3 -m venv ~/helayers &&
~/helayers/bin/pip install pyhelayers``); called by ``bench_linear.py`` with a JSON file::

    {"coef": [[...]], "intercept": [b], "X": [[...], ...], "batch": 100,
     "model_encrypted": false}

HElayers' own LogisticRegression, SEAL CKKS backend, ``optimize_for_batch_size(batch)``,
optimizer target CLIENT_SIDE_CPU_PER_SAMPLE, 128-bit security.  Prints one JSON line:
per-sample encrypt / predict / decrypt times (minimum over repeats), sizes (upload per sample,
result per sample, public context with its evaluation keys) and the largest deviation of
the decrypted scores from the float scores of the same weights (activation NONE: scores,
as fheml returns them; ``"activation": "SIGMOID_POLY_9"`` for HElayers' sigmoid).
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyhelayers as h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    spec = json.load(open(args.model))
    coef = np.asarray(spec["coef"], dtype=np.float64).reshape(1, -1)
    intercept = np.asarray(spec["intercept"], dtype=np.float64).reshape(1)
    X = np.asarray(spec["X"], dtype=np.float64)
    batch = int(spec["batch"])

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.json")
        with open(path, "w") as f:
            json.dump({"coef_": coef.tolist(), "intercept_": intercept.tolist()}, f)
        hp = h.PlainModelHyperParams()
        hp.number_of_features = coef.shape[1]
        # scores, as fheml computes them (the sigmoid runs on the client in the clear)
        hp.logistic_regression_activation = getattr(h.LRActivation, spec.get("activation",
                                                                              "NONE"))
        plain = h.LogisticRegressionPlain.create(hp, [path])

    t = time.perf_counter()
    req = h.HeRunRequirements()
    req.set_he_context_options([h.SealCkksContext()])
    req.optimize_for_batch_size(batch)
    req.set_optimization_target(h.OptimizationTarget.CLIENT_SIDE_CPU_PER_SAMPLE)
    req.set_model_encrypted(bool(spec.get("model_encrypted", False)))
    profile = h.HeModel.compile(plain, req)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    context = h.HeModel.create_context(profile)
    keygen_s = time.perf_counter() - t
    he_model = plain.get_empty_he_model(context)
    if spec.get("model_encrypted", False):
        he_model.encode_encrypt(plain, profile)
    else:
        he_model.encode(plain, profile)
    io = he_model.create_model_io_encoder()

    Xb = X[:batch]
    enc, run, dec = [], [], []
    out = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        data = h.EncryptedData(context)
        io.encode_encrypt(data, [Xb])
        t1 = time.perf_counter()
        res = h.EncryptedData(context)
        he_model.predict(res, data)
        t2 = time.perf_counter()
        out = np.asarray(io.decrypt_decode_output(res)).reshape(-1)[:len(Xb)]
        t3 = time.perf_counter()
        enc.append(t1 - t0)
        run.append(t2 - t1)
        dec.append(t3 - t2)
    n = len(Xb)
    expected = Xb @ coef[0] + intercept[0]
    if spec.get("activation", "NONE") != "NONE":
        expected = 1.0 / (1.0 + np.exp(-expected))
    threshold = 0.0 if spec.get("activation", "NONE") == "NONE" else 0.5
    upload = len(data.save_to_buffer())
    result = len(res.save_to_buffer())
    public = len(context.save_to_buffer())
    print(json.dumps({
        "peer": f"pyhelayers (SEAL CKKS, model_encrypted={bool(spec.get('model_encrypted'))})",
        "batch": n, "compile_s": compile_s, "keygen_s": keygen_s,
        "encrypt_ms": 1e3 * min(enc) / n, "run_ms": 1e3 * min(run) / n,
        "decrypt_ms": 1e3 * min(dec) / n,
        "total_ms": 1e3 * (min(enc) + min(run) + min(dec)) / n,
        "upload_bytes_per_sample": upload / n, "result_bytes_per_sample": result / n,
        "context_and_keys_bytes": public,
        "max_abs_error": float(np.max(np.abs(out - expected))),
        "same_class": float(np.mean((out > threshold) == (expected > threshold))),
    }))


if __name__ == "__main__":
    main()
