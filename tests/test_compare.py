"""compare: every reported figure equals what the models and the written files actually hold."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.compare import (
    COMPONENTS,
    PUBLISHED_SETTING,
    SIZE_FORMATS,
    compare,
    count_flops,
    markdown,
    measure_models,
    plot_comparison,
    published_config,
)
from qelm.evaluate import evaluate
from qelm.tokenizer import CharTokenizer


def _header_bytes(path: Path) -> int:
    with open(path, "rb") as fh:
        return 8 + int.from_bytes(fh.read(8), "little")


@pytest.fixture
def models(tiny_config):
    qelm = QELM(tiny_config)
    return {"qelm": qelm, "twin": ClassicalLM(tiny_config), "matched": ClassicalLM.matched_to(qelm)}


@pytest.fixture
def measured(models, tmp_path):
    idx = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 2, 6, 7, 8]])  # 9 distinct ids, 12 tokens
    return measure_models(models, reference="twin", idx=idx, keep_dir=tmp_path), idx, tmp_path


def test_parameter_totals_are_the_models_own(models, measured):
    comp, _, _ = measured
    for name, model in models.items():
        r = comp[name]
        assert r.total_parameters == sum(p.numel() for p in model.parameters())
        assert sum(r.parameters.values()) == r.total_parameters
        assert set(r.parameters) == set(COMPONENTS), "every parameter belongs to one of the five components"
        assert r.total_circuit_weights == model.circuit_parameters()
    q = comp["qelm"]
    cfg = models["qelm"].config
    circuit = cfg.circuit(cfg.embedding_circuit)
    assert q.total_circuit_inputs == cfg.vocab_size * circuit.n_inputs
    assert q.circuit_weights["attention"] == models["qelm"].blocks[0].attention.heads.weights.numel()
    assert comp["twin"].total_circuit_weights == 0 and comp["twin"].kind == "classical"
    # the twin's components, from the module definitions
    d, h, V, C = cfg.d_model, cfg.d_hidden, cfg.vocab_size, cfg.context_len
    assert comp["twin"].parameters == {"embedding": V * d + C * d, "attention": 4 * d * d + 4 * d,
                                       "feed_forward": 2 * d * h + h + d, "norms": 6 * d, "lm_head": d * V}


def test_sizes_are_the_bytes_of_the_written_files(models, measured):
    comp, _, directory = measured
    for name, model in models.items():
        r = comp[name]
        for fmt, dtype in (("safetensors_float32", "float32"), ("safetensors_float16", "float16"),
                           ("safetensors_bfloat16", "bfloat16")):
            path = directory / f"{name}.{dtype}.safetensors"
            assert r.sizes[fmt] == os.path.getsize(path)
            loaded = load_file(path)
            assert set(loaded) == set(model.state_dict())
            assert all(t.dtype == getattr(torch, dtype) for t in loaded.values())
        assert r.sizes["torch_save"] == os.path.getsize(directory / f"{name}.pt")
        restored = torch.load(directory / f"{name}.pt")
        assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())
        f32 = load_file(directory / f"{name}.float32.safetensors")
        assert all(torch.equal(f32[k], v) for k, v in model.state_dict().items())
        folder = directory / f"{name}.checkpoint"
        assert r.sizes["checkpoint"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) > 0
        assert r.size_notes == {}
        loaded = load_checkpoint(folder).model.state_dict()  # the folder is a whole, loadable checkpoint
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_float16_files_are_half_of_float32_up_to_the_header(models, measured):
    comp, _, directory = measured
    for name in models:
        r = comp[name]
        h32 = _header_bytes(directory / f"{name}.float32.safetensors")
        assert r.sizes["safetensors_float32_header"] == h32
        for dtype in ("float16", "bfloat16"):
            path = directory / f"{name}.{dtype}.safetensors"
            h16 = _header_bytes(path)
            data32 = r.sizes["safetensors_float32"] - h32
            data16 = os.path.getsize(path) - h16
            assert data32 == 4 * r.total_parameters  # the tensor data is exactly the parameters
            assert data16 * 2 == data32
            assert abs(os.path.getsize(path) - r.sizes["safetensors_float32"] / 2) <= max(h32, h16)


def test_flops_of_a_linear_layer_are_two_in_out_per_token():
    layer = nn.Linear(5, 7)
    x = torch.randn(3, 4, 5)  # 12 tokens
    assert count_flops(layer, x) == 2 * 5 * 7 * 12
    assert count_flops(nn.Linear(5, 7, bias=False), x) == 2 * 5 * 7 * 12


def test_model_flops_per_token_are_analytic_and_exclude_the_simulator(tiny_config, measured):
    comp, idx, _ = measured
    d, h, V, T, n, H = (tiny_config.d_model, tiny_config.d_hidden, tiny_config.vocab_size, idx.shape[1],
                        tiny_config.n_qubits, tiny_config.n_heads)
    # twin: qkv + proj + fc + proj + lm_head, plus q@k^T and att@v (full T x T) per token
    assert comp["twin"].flops_per_token == 2 * (4 * d * d + 2 * d * h + d * V) + 4 * T * d
    # QELM, classical part only: embedding expand, attention reduce/expand, head scores on n-dim features,
    # feed-forward reduce/expand, lm_head; the circuit simulation is counted apart
    assert comp["qelm"].flops_per_token == 2 * n * d + 2 * (2 * d * H * n) + 4 * T * n * H + 2 * (2 * d * n) + 2 * d * V
    assert comp["qelm"].simulator_flops_per_token > 0
    assert comp["twin"].simulator_flops_per_token is None


def test_circuit_executions_gates_and_shots_are_counted(tiny_config, measured):
    comp, idx, _ = measured
    q = comp["qelm"]
    B, T = idx.shape
    n, L, H = tiny_config.n_qubits, tiny_config.circuit_layers, tiny_config.n_heads
    by_name = {c.name: c for c in q.circuits}
    assert {k: c.executions for k, c in by_name.items()} == {
        "angle": len(torch.unique(idx)),  # one embedding circuit per distinct token id
        "attention": B * T * H * 3,  # query, key and value circuits per token and head
        "feed_forward": B * T,
    }
    for c in q.circuits:
        assert c.executions_per_token == c.executions / (B * T)
        assert c.shots_per_token_worst == c.executions_per_token * 10_000  # eps = 0.01
        assert 0 < c.shots_per_token_measured <= c.shots_per_token_worst
        assert c.shots_per_token_separate == c.shots_per_token_worst * n
        assert c.amplitude_updates_per_token == c.executions_per_token * 2**n * c.simulator_gate_count
    # re-uploading circuit: per layer one RY per qubit, one Rot per qubit, a ring of n CNOTs
    assert by_name["attention"].simulator_gates == {"RY": n * L, "Rot": n * L, "CNOT": n * L}
    assert set(by_name["attention"].basis_gates) <= {"RX", "RY", "RZ", "CNOT", "Hadamard", "T", "Adjoint(T)"}
    assert q.executions_per_token == sum(c.executions for c in q.circuits) / (B * T)
    assert comp["twin"].circuits == [] and comp["twin"].shots_per_token() == 0


def test_fidelity_state_readout_has_no_shot_figure(tiny_config):
    cfg = tiny_config.replace(attention="fidelity")
    comp = measure_models({"qelm": QELM(cfg)}, batch_size=1)
    fid = [c for c in comp["qelm"].circuits if c.name == "fidelity"]
    assert fid and fid[0].returns == "state" and fid[0].shots_per_token_worst is None
    assert comp["qelm"].shots_per_token() is None
    assert "no shot equivalent" in markdown(comp)


def test_published_setting_and_its_verdict_come_from_measurement():
    cfg = published_config(context_len=4)  # the claim is about vocab/width; a short context keeps this fast
    assert {k: getattr(cfg, k) for k in PUBLISHED_SETTING} == {"vocab_size": 100, "d_model": 128, "n_heads": 4,
                                                               "d_hidden": 256}
    comp = compare(cfg, published=True, batch_size=1)
    twin = comp["twin"].sizes["safetensors_float32"]
    qelm = comp["qelm"].sizes["safetensors_float32"]
    text = comp.claim_verdict
    assert f"measured gap {twin / qelm:.1f}x" in text
    assert f"the claim is {15e6 / twin:.1f}-" in text
    assert comp.setting == "published" and "Claim check:" in markdown(comp)
    with pytest.raises(ValueError, match="d_model=64"):
        compare(cfg.replace(d_model=64), published=True)


def test_verdict_says_when_the_qelm_is_not_smaller_than_a_matched_model(measured):
    comp, _, _ = measured
    assert "Bytes follow parameter count" in comp.verdict
    assert f"{comp['qelm'].total_parameters:,} params" in comp.verdict


def test_plot_writes_a_png(measured, tmp_path):
    comp, _, _ = measured
    out = plot_comparison(comp, tmp_path / "sizes.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="unsupported format"):
        plot_comparison(comp, tmp_path / "sizes.xyz")
    assert not (tmp_path / "sizes.xyz").exists()


def test_data_without_checkpoints_is_refused(tiny_config):
    with pytest.raises(ValueError, match="checkpoints"):
        compare(tiny_config, data="valid.txt")


# --- CLI -------------------------------------------------------------------------------------------------
TINY_FLAGS = ["--vocab-size", "11", "--d-model", "8", "--n-heads", "2", "--d-hidden", "16", "--n-layers", "1",
              "--context-len", "6", "--n-qubits", "2", "--circuit-layers", "1"]


def test_cli_json_has_every_field(cli, tmp_path):
    out = tmp_path / "cmp.json"
    rc, printed, _ = cli("compare", *TINY_FLAGS, "--json", out, "--plot", tmp_path / "cmp.png")
    assert rc == 0
    assert "| **params: total**" in printed and "Verdict:" in printed
    data = json.loads(out.read_text())
    assert data["reference"] == "twin" and [m["name"] for m in data["models"]] == ["qelm", "twin", "matched"]
    cfg = QELMConfig(vocab_size=11, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=6, n_qubits=2,
                     circuit_layers=1)
    for m in data["models"]:
        assert set(SIZE_FORMATS) <= set(m["sizes"])
        assert m["parameters"]["total"] == sum(v for k, v in m["parameters"].items() if k != "total")
        for key in ("flops_per_token", "executions_per_token", "shots_per_token_worst", "circuit_weights",
                    "ratio_to_reference", "config"):
            assert key in m
    assert data["models"][0]["parameters"]["total"] == QELM(cfg).num_parameters()
    assert data["models"][1]["ratio_to_reference"]["parameters"] == 1.0
    assert {c["name"] for c in data["models"][0]["circuits"]} == {"angle", "attention", "feed_forward"}
    assert "shots" in data["method"] and data["verdict"]
    assert (tmp_path / "cmp.png").stat().st_size > 0


@pytest.mark.parametrize("argv, needle", [
    (["--d-model", "10", "--n-heads", "3"], "d_model=10"),
    (["--published", "--d-model", "64"], "--published fixes d_model=128"),
    (["--data", "missing.txt"], "checkpoints"),
    (["--checkpoint", "no/such/folder"], "no/such/folder"),
    (["--n-qubits", "0"], "argument --n-qubits: 0 is invalid: use an integer >= 1"),
    (["--eps", "2"], "--eps 2.0 is invalid"),
    (["--eps", "nan"], "argument --eps: nan is invalid: use a finite number > 0"),
    (["--seed", str(2**64)], "argument --seed: 18446744073709551616 is invalid: use an integer from 0 to"),
    (["--plot", "sizes.xyz"], "sizes.xyz"),
])
def test_cli_bad_flags_give_one_line_and_exit_2(cli, argv, needle):
    line = cli.error("compare", *argv)
    assert line.startswith("qelm compare: error:") and needle in line


def test_checkpoints_and_perplexity(tiny_config, tmp_path):
    text = "abcdefghij " * 20
    tok = CharTokenizer.from_text(text)
    cfg = tiny_config.replace(vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "run" / "qelm", QELM(cfg), tok)
    save_checkpoint(tmp_path / "run" / "twin", ClassicalLM(cfg), tok)
    data = tmp_path / "valid.txt"
    data.write_text(text, encoding="utf-8")
    comp = compare(checkpoints=[tmp_path / "run"], data=data, batch_size=1, eval_batch_size=4)
    assert [m.name for m in comp.models] == ["qelm", "twin"] and comp.reference == "twin"
    assert [m.kind for m in comp.models] == ["quantum", "classical"]
    for m, kind in zip(comp.models, ("qelm", "twin")):
        loaded = load_checkpoint(tmp_path / "run" / kind)
        expected = evaluate(loaded.model, torch.tensor(tok.encode(text)), batch_size=4, context_len=cfg.context_len)
        assert math.isclose(m.perplexity["perplexity"], float(expected["perplexity"]), rel_tol=1e-6)
    assert "validation perplexity" in markdown(comp) and "perplexity" in comp.verdict.lower()


@pytest.mark.parametrize("flag, name", [("--json", "c.json"), ("--plot", "c.png"), ("--keep-files", "files")])
def test_cli_a_read_only_output_fails_before_measuring(cli, read_only_folder, monkeypatch, flag, name):
    import qelm.cli.compare

    def measured(*args, **kwargs):
        raise AssertionError("measured before the output was checked")

    monkeypatch.setattr(qelm.cli.compare, "compare", measured)
    target = read_only_folder / name
    line = cli.error("compare", flag, target)
    assert f"{flag} {str(target)!r}" in line and "is not writable" in line and ".tmp" not in line
