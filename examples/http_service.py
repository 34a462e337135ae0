"""An encrypted prediction over HTTP: ``fheml serve`` in a subprocess, a client in this one.

Needs the serve extra (``pip install "fheml[serve]"``). The service listens on a free port
of 127.0.0.1 and is stopped at the end.

    python examples/http_service.py
"""
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from fheml.deployment.http_client import HTTPClient
from fheml.quantization import FHEMLClipWarning

root = Path(tempfile.mkdtemp())
# `fheml save` fits FHELogisticRegression on breast_cancer and saves it.
subprocess.run([sys.executable, "-m", "fheml", "save", "breast_cancer", str(root / "model")],
               check=True, timeout=120)
service = subprocess.Popen([sys.executable, "-m", "fheml", "serve", str(root / "model"),
                            "--port", "0", "--log-level", "warning"],
                           stdout=subprocess.PIPE, text=True)
try:
    url = service.stdout.readline().split()[-1]          # "fheml serve: DIR on http://..."
    http = HTTPClient(url, root / "model", key_dir=root / "keys", timeout=60)
    print("health:", http.health(), "| model:", http.model_info()["model"])
    print("key id:", http.upload_keys()[:8] + "...")
    X, y = load_breast_cancer(return_X_y=True)
    # Rows outside the training split may exceed its range: they are clipped (with a warning).
    warnings.simplefilter("ignore", FHEMLClipWarning)
    t0 = time.perf_counter()
    labels = http.predict(X[:100], method="predict")
    t1 = time.perf_counter()
    print(f"100 rows encrypted, computed by the service, decrypted: {1e3 * (t1 - t0):.0f} ms; "
          f"accuracy {np.mean(labels == y[:100]):.2f}")
    http.delete_keys()
finally:
    service.terminate()
    service.wait(timeout=30)
