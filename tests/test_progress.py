"""Progress reports of slow jobs and the configuration that switches them (issue 8, B)."""

import io
import logging

import numpy as np
import pytest

import fheml
from fheml import _progress
from fheml._progress import progress


def test_config_context_restores_and_validates():
    assert fheml.get_config() == {"fhe": None, "verbose": None, "working_memory": 256}
    with fheml.config_context(fhe="simulate", verbose=True):
        assert fheml.get_config()["fhe"] == "simulate" and fheml.get_config()["verbose"]
        with fheml.config_context(verbose=False):
            assert fheml.get_config()["verbose"] is False
        assert fheml.get_config()["verbose"] is True
    assert fheml.get_config() == {"fhe": None, "verbose": None, "working_memory": 256}
    with pytest.raises(ValueError, match="fhe must be one of"):
        with fheml.config_context(fhe="encrypted"):
            pass
    with pytest.raises(TypeError, match="verbose"):
        fheml.set_config(verbose="yes")


def test_logging_when_not_a_terminal(caplog, monkeypatch):
    monkeypatch.setattr(_progress, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="fheml"):
        with progress(3, "Work", unit="step", verbose=True) as bar:
            for _ in range(3):
                bar.update()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Work: 3 step(s) to do"
    assert any("Work: 1/3 step(s)" in m for m in messages)
    assert messages[-1].startswith("Work: 3 step(s) in ")


def test_quiet_and_default_levels(caplog):
    with caplog.at_level(logging.DEBUG, logger="fheml"):
        with progress(2, "Silent", verbose=False) as bar:
            bar.update(2)
        with fheml.config_context(verbose=False):
            with progress(2, "Silent too") as bar:
                bar.update(2)
        assert caplog.records == []
        with progress(2, "Default") as bar:
            bar.update(2)
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    with progress(4, "Bars", unit="lookup", verbose=True) as bar:
        bar.update(4)
    assert "Bars:" in err.getvalue() and "/4 [" in err.getvalue()


def test_keygen_and_encrypted_run_report(caplog):
    circuit = fheml.compile(lambda x: (x * x) % 5, np.arange(8)[:, None])
    with caplog.at_level(logging.INFO, logger="fheml"):
        out = circuit.encrypt_run_decrypt(np.arange(8)[:, None], verbose=True)
    assert out[:, 0].tolist() == [(v * v) % 5 for v in range(8)]
    done = [r.getMessage() for r in caplog.records if " in " in r.getMessage()]
    ggsw = circuit.parameters.bsk_ggsw_count  # n, or (2^g - 1) n / g with multi-bit keys
    assert any(m.startswith(f"Key generation: {2 * ggsw} GGSW(s)") for m in done)
    assert any(m.startswith(f"Encrypted run: {8 * circuit.statistics['lookups']} lookup(s)")
               for m in done)
