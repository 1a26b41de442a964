"""The benchmark harness: every mode runs and yields complete, positive, well-formed figures; budgets skip
with a labelled extrapolation; failures are recorded, not raised; the CLI parses, prints and writes.
No timing is asserted: speed is what the harness reports, not what the tests check."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from qelm.backends import BackendSpec

from qelm.bench import (EXTRAPOLATED, MODES, BenchSettings, fit_power_law, format_scaling, format_table, plot,
                        run_benchmark, write_json)
from qelm.bench.server import _wait
from qelm.bench.sweep import _plan_or_skip

MEASURED = ("median_s", "q25_s", "q75_s", "min_s", "max_s", "tokens_per_s", "seconds_per_token",
            "peak_memory_bytes", "peak_rss_bytes", "n_parameters", "wall_s")


@pytest.fixture(scope="module")
def tiny():
    from qelm import QELMConfig

    return QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=6, n_qubits=2,
                      circuit_layers=1)


@pytest.fixture(scope="module")
def result(tiny):
    settings = BenchSettings(seq_lens=(4, 8), batch=2, repeats=3, gen_tokens=2, qubits=(1, 2), max_seconds=60)
    return run_benchmark(tiny, settings)


def test_every_mode_and_length_is_measured_with_positive_figures(result):
    assert {(r["model"], r["seq_len"], r["mode"]) for r in result.rows} == {
        (m, t, mode) for m in ("qelm", "twin") for t in (4, 8) for mode in MODES}
    for r in result.rows:
        assert r["status"] == "ok", r
        for key in MEASURED:
            assert isinstance(r[key], (int, float)) and r[key] > 0, (key, r)
        assert r["repeats"] == len(r["times_s"]) == 3 and r["min_s"] <= r["q25_s"] <= r["median_s"] <= r["q75_s"] <= r["max_s"]
        tokens = 2 * (2 if r["mode"] == "generation" else r["seq_len"])
        assert math.isclose(r["tokens_per_s"], tokens / r["median_s"])
        assert r["extrapolated"] is None and r["error"] is None and r["memory_method"]
        assert r["threads"] == 1  # the default: one torch thread per measurement
        if r["mode"] == "generation":  # with and without the KV cache, static or growing: the same tokens
            assert r["cache_same_tokens"] is True and r["no_cache_tokens_per_s"] > 0
            assert r["static_same_tokens"] is True
        assert r["cuda_graphs"] is False and "eager_median_s" not in r  # graphs are CUDA's only
    qelm = [r for r in result.rows if r["model"] == "qelm"]
    twin = [r for r in result.rows if r["model"] == "twin"]
    assert all(0 < r["circuit_time_fraction"] <= 1 for r in qelm if r["mode"] == "inference")
    assert all(r["circuit_parameters"] > 0 for r in qelm) and all(r["circuit_parameters"] == 0 for r in twin)


def test_ratios_scaling_and_qubit_sweep(result):
    assert {(r["seq_len"], r["mode"]) for r in result.ratios} == {(t, m) for t in (4, 8) for m in MODES}
    for r in result.ratios:
        assert r["time_ratio"] > 0 and r["tokens_per_s_ratio"] > 0 and r["parameter_ratio"] > 0
    fits = {(f["model"], f["mode"]) for f in result.scaling["seq_len"]}
    assert fits == {(m, mode) for m in ("qelm", "twin") for mode in MODES}
    assert {(r["n_qubits"], r["mode"]) for r in result.qubit_rows} == {(n, m) for n in (1, 2)
                                                                       for m in ("inference", "training")}
    assert all(r["status"] == "ok" and r["seq_len"] == 4 for r in result.qubit_rows)
    assert {f["mode"] for f in result.scaling["qubits"]} == {"inference", "training"}
    assert all(f["per_qubit_factor"] > 0 for f in result.scaling["qubits"])


def test_json_is_complete_and_round_trips(result, tmp_path):
    path = write_json(result, tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(result.to_dict()))
    assert not list(path.parent.glob(".*tmp"))  # atomic write left no temp file
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's private one
    for key in ("schema", "method", "settings", "config", "machine", "rows", "qubit_rows", "ratios", "scaling",
                "notes", "created", "wall_s"):
        assert key in data
    m = data["machine"]
    assert m["cpu_model"] and m["cpu_cores"] >= 1 and m["memory_bytes"] > 0
    assert all(m["versions"][k] for k in ("torch", "pennylane", "qelm"))
    assert any("KV cache" in n for n in data["notes"])


def test_table_and_plot(result, tmp_path):
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("| model | seq len | fwd ms median (IQR) | infer tok/s | train tok/s | gen tok/s")
    body = [ln for ln in lines[2:] if ln.startswith("|")]
    assert len(body) == 4 and all(ln.count("|") == 10 for ln in body)
    assert not any("n/a" in ln or "~" in ln for ln in body)  # every cell measured
    assert "time ~ T^" in format_scaling(result) and "per qubit" in format_scaling(result)
    png = plot(result, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="suffix"):
        plot(result, tmp_path / "bench.jpg")


def test_failing_backend_is_recorded_and_budget_skips_with_extrapolation(tiny):
    # an option no backend accepts: the QELM cannot be built, the twin (no circuits) still runs
    settings = BenchSettings(seq_lens=(2, 3, 4), batch=1, repeats=3, modes=("inference",), max_seconds=1e-9)
    res = run_benchmark(tiny, settings, spec=BackendSpec(options={"no_such_option": 1}))
    qelm = [r for r in res.rows if r["model"] == "qelm"]
    assert qelm[0]["status"] == "error" and "no_such_option" in qelm[0]["error"]
    assert [r["status"] for r in qelm[1:]] == ["not run: failed at seq_len 2"] * 2
    twin = [r for r in res.rows if r["model"] == "twin"]
    assert twin[0]["status"] == "ok" and twin[0]["repeats"] == 1  # the budget cut the 3 repeats to one
    for skipped in twin[1:]:  # predicted from one length: T^1 assumed, and said
        assert skipped["status"].startswith("skipped: predicted") and "> budget" in skipped["status"]
        ex = skipped["extrapolated"]
        assert ex["label"] == EXTRAPOLATED and ex["from"] == {"seq_len": [2]} and "assumed" in ex["time_model"]
        assert math.isclose(ex["median_s"], twin[0]["median_s"] * skipped["seq_len"] / 2)
        assert skipped.get("median_s") is None  # nothing measured is claimed
    table = format_table(res)
    assert "~" in table and EXTRAPOLATED in table and "no_such_option" in table


def test_plan_or_skip_predicts_from_the_fit():
    done = [{"status": "ok", "seq_len": t, "median_s": 0.01 * t ** 2, "peak_memory_bytes": 1000 * t}
            for t in (10, 20, 40)]
    spec = {"mode": "training", "batch": 1, "seq_len": 80, "repeats": 4, "warmup": 1, "gen_tokens": 8}
    under = _plan_or_skip(done, 80, spec, BenchSettings(max_seconds=1e6), 2**40)
    assert under is None
    over = _plan_or_skip(done, 80, spec, BenchSettings(max_seconds=100), 2**40)
    assert math.isclose(over["extrapolated"]["median_s"], 64.0, rel_tol=1e-9)  # 0.01 * 80^2
    assert math.isclose(over["extrapolated"]["measurement_s"], 2 * 64.0, rel_tol=1e-9)  # warm-up + one run
    assert over["extrapolated"]["time_model"] == "T^2.00"
    assert over["status"] == "skipped: predicted 128 s for warm-up + 1 run > budget 100 s"
    memory = _plan_or_skip(done, 80, spec, BenchSettings(max_seconds=1e6), 10_000)
    assert memory["status"].startswith("skipped: predicted peak") and "80% of" in memory["status"]
    # qubit sweep: exponential in n, x2 per qubit assumed after one point
    qdone = [{"status": "ok", "n_qubits": 4, "median_s": 1.0, "peak_memory_bytes": 100}]
    q = _plan_or_skip(qdone, 7, {**spec, "seq_len": 16}, BenchSettings(max_seconds=1), 2**40, axis="n_qubits")
    assert math.isclose(q["extrapolated"]["median_s"], 8.0) and "x2.00 per qubit" in q["extrapolated"]["time_model"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the measurement server forks (POSIX)")
def test_server_wait_kills_at_the_timeout_and_reports_exit_codes():
    pid = os.fork()
    if pid == 0:  # a measurement that never ends
        time.sleep(60)
        os._exit(0)
    start = time.monotonic()
    assert _wait(pid, 0.2) == {"timed_out": True}
    assert time.monotonic() - start < 30  # killed, not waited out
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert _wait(pid, 30) == {"timed_out": False, "exit": 3}


def test_fit_power_law_recovers_exponent():
    fit = fit_power_law([16, 32, 64, 128], [3.0 * t ** 1.5 for t in (16, 32, 64, 128)])
    assert math.isclose(fit["exponent"], 1.5) and math.isclose(fit["prefactor"], 3.0) and fit["r2"] > 0.999
    assert fit_power_law([16], [1.0]) is None and fit_power_law([16, 16], [1.0, 2.0]) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"seq_lens": ()}, "seq_lens is empty"),
    ({"seq_lens": (16, 0)}, "seq_lens value 0"),
    ({"seq_lens": (16, 16)}, "duplicates"),
    ({"modes": ("inference", "decode")}, "decode"),
    ({"max_seconds": 0}, "max_seconds=0"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"threads": -1}, "threads=-1"),
    ({"backends": ("no.such",)}, "unknown backend 'no.such'"),
])
def test_settings_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchSettings(**kwargs)


def test_cli_prints_table_and_writes_json(tiny, tmp_path, cli):
    cfg = tmp_path / "tiny.toml"
    tiny.to_toml(cfg)
    out_json = tmp_path / "b.json"
    code, out, err = cli("bench", "--config", cfg, "--quick", "--seq-lens", "4", "--modes", "inference",
                         "--repeats", "1", "--json", out_json)
    assert code == 0, err
    assert "| QELM qelm.fused | 4 |" in out and "| twin (classical) | 4 |" in out and "wrote" in out
    data = json.loads(out_json.read_text())
    assert data["settings"]["batch"] == 2 and data["settings"]["seq_lens"] == [4]  # --quick batch, flag lengths
    assert data["command"].startswith("qelm bench --config") and "--quick" in data["command"]
    assert data["config"]["d_model"] == 8


@pytest.mark.parametrize("argv, message", [
    (["--seq-lens", "128,x"], "'x' in '128,x' is not an integer"),
    (["--modes", "inference,fly"], "fly"),
    (["--plot", "out.jpg"], ".png, .svg or .pdf"),
    (["--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["--batch-size", "0"], "argument --batch-size: 0 is invalid: use an integer >= 1"),
    (["--max-seconds", "inf"], "argument --max-seconds: inf is invalid: use a finite number > 0"),
    (["--compile", "--backend", "default.qubit"], "--compile needs circuits torch.compile can trace: backend "
                                                  "qelm.fused (or a model without circuits), not 'default.qubit'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("bench", *argv)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("flag, name", [("--json", "b.json"), ("--plot", "b.png")])
def test_cli_a_read_only_output_fails_before_measuring(cli, read_only_folder, monkeypatch, flag, name):
    import qelm.cli.bench

    def measured(*args, **kwargs):
        raise AssertionError("measured before the output was checked")

    monkeypatch.setattr(qelm.cli.bench, "run_benchmark", measured)
    target = read_only_folder / name
    line = cli.error("bench", "--quick", flag, target)
    assert f"{flag} {str(target)!r}" in line and "is not writable" in line and ".tmp" not in line


def test_graphed_rows_show_their_eager_figures_beside_them(result):
    d = result.to_dict()
    for r in d["rows"]:  # as a CUDA run records them
        if r["mode"] in ("inference", "generation"):
            r |= {"cuda_graphs": True, "eager_median_s": 2 * r["median_s"], "eager_tokens_per_s": r["tokens_per_s"] / 2}
    table = format_table(d)
    assert "eager fwd ms | eager gen tok/s | gen x twin |" in table and "replayed CUDA graphs" in table
    assert "eager fwd ms" not in format_table(result)


def test_cli_records_the_graph_and_compile_flags(tiny, cli, monkeypatch):
    import qelm.cli.bench
    from qelm.bench import BenchResult

    seen = {}

    def fake(config, settings, progress=None):
        seen["settings"] = settings
        return BenchResult(settings={**vars(settings), "modes": list(settings.modes)}, config=config.to_dict(),
                           machine={}, created="")

    monkeypatch.setattr(qelm.cli.bench, "run_benchmark", fake)
    monkeypatch.setattr(qelm.cli.bench, "report", lambda result: result.command)
    code, out, err = cli("bench", "--quick", "--no-cuda-graphs", "--compile")
    assert code == 0, err
    assert seen["settings"].cuda_graphs is False and seen["settings"].compile is True
    assert "--no-cuda-graphs" in out and "--compile" in out


@pytest.mark.parametrize("model, mode", [("qelm", "inference"), ("qelm", "generation"), ("twin", "generation")])
def test_a_graphed_measurement_times_the_eager_calls_beside_it(tiny, model, mode, monkeypatch):
    """The CUDA branch, run on the CPU: graphs 'apply' (eagerly here) and the eager figures come beside them."""
    import qelm.bench.worker as worker
    import qelm.decode as decode

    monkeypatch.setattr(worker, "_graphed", lambda spec: spec["mode"] != "training")
    monkeypatch.setattr(decode, "_records", lambda device: True)
    spec = {"model": model, "mode": mode, "batch": 2, "repeats": 2, "warmup": 1, "gen_tokens": 3, "device": "cpu",
            "seed": 0, "lr": 1e-3, "config": tiny.to_dict(), "runtime": BackendSpec().to_table()}
    with pytest.warns(UserWarning, match=r"CUDA graph recording failed \(RuntimeError: ") as caught:  # no GPU:
        row = worker.measure(spec)  # the real recorder fails, once, and every call runs eagerly
    assert len([w for w in caught if "CUDA graph" in str(w.message)]) == 1
    assert row["cuda_graphs"] is True and row["eager_median_s"] > 0 and row["eager_tokens_per_s"] > 0
    if mode == "inference":
        assert 0 < row["circuit_time_fraction"] <= 1  # from the eager runs: a clock would stop the graphs
    else:
        assert row["static_same_tokens"] is True and row["cache_same_tokens"] is True
