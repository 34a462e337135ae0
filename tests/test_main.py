"""The command line: python -m fheml demo | params | bench | save | serve."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_iris

from fheml.__main__ import main
from fheml._core import select_parameters
from fheml.deployment import FHEModelClient, FHEModelServer

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [[], ["demo"], ["params"], ["bench"], ["save"], ["serve"]])
def test_help_of_every_command(command):
    out = subprocess.run([sys.executable, "-m", "fheml", *command, "--help"], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: fheml")
    if not command:
        for name in ("demo", "params", "bench", "save", "serve"):
            assert name in out.stdout


def test_params_matches_the_selector(capsys):
    assert main(["params", "--precision", "3", "--log2-p-error", "-30", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    params = select_parameters(3, 2.0 ** -30)
    assert {k: info[k] for k in params.to_dict()} == params.to_dict()
    assert info["evaluation_key_upload_bytes"] == params.seeded_bsk_bytes + params.seeded_ksk_bytes
    assert info["log2_p_fail"] <= -30
    assert main(["params", "--precision", "20", "--no-bootstrap"]) == 0
    text = capsys.readouterr().out
    assert "no bootstrap" in text and "no evaluation key" in text


def test_params_reports_impossible_targets(capsys):
    assert main(["params", "--precision", "12"]) == 1
    assert "fheml params: error" in capsys.readouterr().err


def test_save_then_load_and_run(tmp_path, capsys):
    assert main(["save", "iris", str(tmp_path), "--model", "FHELinearSVC",
                 "--param", "C=0.5", "--n-bits", "6"]) == 0
    assert "fheml serve" in capsys.readouterr().out
    X, _ = load_iris(return_X_y=True)
    client, server = FHEModelClient(tmp_path), FHEModelServer(tmp_path)
    labels = client.deserialize_decrypt_dequantize(
        server.run(client.quantize_encrypt_serialize(X[:10]),
                   client.get_serialized_evaluation_keys()))
    assert labels.shape == (10,) and set(labels) <= {0, 1, 2}
    assert main(["save", "iris", str(tmp_path)]) == 1           # exists already
    assert "overwrite" in capsys.readouterr().err
    assert main(["save", "iris", str(tmp_path), "--model", "NoSuchModel"]) == 2
    assert main(["save", "iris", str(tmp_path), "--param", "C"]) == 2


def test_demo_prints_accuracy_and_latency(capsys):
    assert main(["demo", "--rows", "40"]) == 0
    out = capsys.readouterr().out
    accuracies = [float(w.rstrip(",")) for w in out.split("accuracy:")[1].splitlines()[0].split()
                  if w.rstrip(",").replace(".", "", 1).isdigit()]
    assert len(accuracies) == 3 and min(accuracies) > 0.85
    assert "encrypted == clear quantized on 100.0% of rows" in out
    assert "ms per row" in out


def test_bench_runs_and_checks_its_results(capsys):
    assert main(["bench", "--precision", "2", "--lookups", "4", "--rows", "20",
                 "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "correct" in out and "equal to the clear run" in out
