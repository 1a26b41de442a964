"""benchmarks/gpu_backends.py, the backend crossover study: a quick CPU run writes its JSON and plot, every
row has its figures, and each backend agrees with qelm.fused. No timing is asserted."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_backends.py"
KEYS = {"backend", "n_qubits", "N", "seconds_per_step", "ms_per_sample", "samples_per_second", "max_abs_diff",
        "peak_mib", "tensors_on", "skipped", "error"}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_backends", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ first; undone afterwards
    bench = _load()
    bench.main(["--quick", "--device", "cpu", "--backends", "qelm.fused,default.qubit", "--max-batch", "64",
                "--out", str(tmp_path), "--label", "test"])
    data = json.loads((tmp_path / "gpu-backends-test.json").read_text())
    assert (tmp_path / "gpu-backends-test.png").stat().st_size > 0
    assert [(r["backend"], r["n_qubits"]) for r in data["rows"]] == [
        (b, n) for n in (4, 8) for b in ("qelm.fused", "default.qubit")]
    for r in data["rows"]:
        assert set(r) >= KEYS, r
        assert r["skipped"] is None and r["error"] is None, r
        assert 1 <= r["N"] <= 64 and r["tensors_on"] == "cpu" and r["peak_mib"] is None
        assert r["ms_per_sample"] > 0 and r["max_abs_diff"] < 1e-8
    assert data["settings"]["qubits"] == [4, 8] and data["settings"]["repeats"] == 1
    assert "--quick" in data["command"] and data["versions"]["torch"]
    out = capsys.readouterr().out
    assert "crossover" in out and "n=8: fastest" in out


def test_a_refused_batch_is_replaced_by_the_batch_it_names(monkeypatch):
    """qelm.fused refuses a batch over its memory before allocating and names the largest that fits: the
    study takes that batch instead of recording an error."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    bench = _load()
    assert bench.refused_batch(MemoryError("... needs about 3.0 GiB ...: at most 37 states fit; use ...")) == 37
    assert bench.refused_batch(MemoryError("out of memory")) is None

    def one_step(n):
        if n > 100:
            raise bench.Refused(100)
        return 0.001 * n

    n, t, probes = bench.fit_batch(one_step, 4096, True, 20.0)
    assert n == 100 and t == 0.1
    assert (512, None) in probes and probes[-1] == (100, 0.1)
