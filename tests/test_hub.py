"""Hugging Face habits: ``save_pretrained`` / ``from_pretrained`` (PyTorchModelHubMixin) on local folders,
and qelm checkpoints as the same format: each loads the other's folder, and nothing is lost either way.
``push_to_hub`` needs a network and is not tested here."""

import json

import pytest
import torch
from safetensors import safe_open

from qelm import QELM, ClassicalLM, load_checkpoint, save_checkpoint
from qelm.model_files import CONFIG, CONFIG_JSON, MANIFEST, TOKENIZER, WEIGHTS
from qelm.tokenizer import CharTokenizer, load_tokenizer


@pytest.fixture
def tokenizer():
    return CharTokenizer.from_text("abcdefghij")  # ten characters and the unknown token: 11


@pytest.fixture
def idx(tiny_config):
    return torch.randint(0, tiny_config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(3))


def _tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)


@pytest.mark.parametrize("cls", [QELM, ClassicalLM])
def test_save_pretrained_then_from_pretrained_gives_the_same_model(tmp_path, tiny_config, idx, cls, capsys):
    model = cls(tiny_config).eval()
    model.save_pretrained(tmp_path / "hf")
    assert {WEIGHTS, CONFIG_JSON} <= {p.name for p in (tmp_path / "hf").iterdir()}
    config = json.loads((tmp_path / "hf" / CONFIG_JSON).read_text())
    assert config["kind"] == ("classical" if cls is ClassicalLM else "qelm") and config["n_qubits"] == 2
    again = cls.from_pretrained(tmp_path / "hf")
    assert type(again) is cls and not again.training and again.config == model.config
    assert torch.equal(again(idx)[0], model(idx)[0])
    assert type(QELM.from_pretrained(tmp_path / "hf")) is cls, "QELM.from_pretrained loads either kind"
    assert capsys.readouterr().out == "", "the library never prints"


def test_a_checkpoint_folder_is_a_hugging_face_folder_and_back(tmp_path, tiny_config, tokenizer, idx, capfd):
    """qelm -> Hugging Face: QELM.from_pretrained reads a checkpoint folder as it is. Hugging Face -> qelm:
    a save_pretrained folder with the tokenizer saved beside it loads with load_checkpoint. Weights and
    config come through bit for bit, both ways."""
    model = QELM(tiny_config).eval()
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    from_ck = QELM.from_pretrained(tmp_path / "ck")
    assert from_ck.config == model.config and torch.equal(from_ck(idx)[0], model(idx)[0])
    older = tmp_path / "older"  # a checkpoint of an older qelm: no config.json, no manifest
    older.mkdir()
    for name in (WEIGHTS, CONFIG, TOKENIZER):
        (older / name).write_bytes((tmp_path / "ck" / name).read_bytes())
    assert torch.equal(QELM.from_pretrained(older)(idx)[0], model(idx)[0])

    from_ck.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    ck = load_checkpoint(tmp_path / "hf")
    assert ck.kind == "qelm" and ck.config == model.config and ck.tokenizer.chars == tokenizer.chars
    assert torch.equal(ck.model(idx)[0], model(idx)[0])
    a, b = _tensors(tmp_path / "ck" / WEIGHTS), _tensors(tmp_path / "hf" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "ck" / CONFIG_JSON).read_text()) == json.loads((tmp_path / "hf" / CONFIG_JSON).read_text())

    save_checkpoint(tmp_path / "back", ck.model, ck.tokenizer)  # and back into a checkpoint: the same files
    for name in (CONFIG, CONFIG_JSON, TOKENIZER):
        assert (tmp_path / "back" / name).read_bytes() == (tmp_path / "ck" / name).read_bytes(), name
    assert capfd.readouterr() == ("", ""), "nothing printed or logged"
    a, b = _tensors(tmp_path / "ck" / WEIGHTS), _tensors(tmp_path / "back" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # (the header's key order may differ)


def test_from_pretrained_checks_the_folder_and_loads_nothing_else(tmp_path, tiny_config, tokenizer):
    QELM(tiny_config).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="holds a QELM, not a ClassicalLM"):
        ClassicalLM.from_pretrained(tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json: save the tokenizer beside the model"):
        load_checkpoint(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / CONFIG_JSON).read_text())
    (tmp_path / "hf" / CONFIG_JSON).write_text(json.dumps({**config, "d_model": 12, "n_heads": 2}))
    with pytest.raises(ValueError, match="model.safetensors does not match config.json"):
        QELM.from_pretrained(tmp_path / "hf")  # strict: a mismatch is named, never half-loaded
    (tmp_path / "hf" / CONFIG_JSON).write_text(json.dumps({**config, "backend": "default.qubit"}))
    with pytest.raises(ValueError, match=r"config.json is invalid: backend is given twice, .* keep the \[runtime\] one"):
        QELM.from_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / CONFIG_JSON).write_text(json.dumps({**config, "runtime": {"backend": "my.module.Device"}}))
    with pytest.raises(ValueError, match="config.json is invalid: backend='my.module.Device' is invalid"):
        QELM.from_pretrained(tmp_path / "hf")  # a name in a file is never imported


def test_save_pretrained_refuses_a_checkpoint_folder_and_writes_no_temporary_files(tmp_path, tiny_config, tokenizer):
    model = QELM(tiny_config)
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    with pytest.raises(ValueError, match="holds a qelm checkpoint; save_pretrained would leave its checkpoint.json"):
        model.save_pretrained(tmp_path / "ck")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    model.save_pretrained(tmp_path / "hf")
    assert not [p for p in (tmp_path / "hf").iterdir() if p.name.startswith(".")], "no temporary file left"
    assert MANIFEST not in {p.name for p in (tmp_path / "hf").iterdir()}
    assert load_tokenizer(tokenizer.save_pretrained(tmp_path / "hf")).chars == tokenizer.chars
