"""Checkpoint folders: exact round trips, the classical kind, atomic writes, and a clear error for every
way a folder can be wrong."""

import os

import pytest
import torch

from qelm import QELM, ClassicalLM
from qelm.backends import BackendUnavailable
from qelm.checkpoint import (CONFIG, TOKENIZER, TRAINING_STATE, WEIGHTS, ensure_writable_dir, load_checkpoint,
                             save_checkpoint)
from qelm.tokenizer import CharTokenizer

CHARS = "abcdefghijk"  # 11 tokens: the tiny_config's vocab_size


pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture
def tokenizer():
    return CharTokenizer(CHARS)


@pytest.fixture
def idx():
    return torch.randint(0, len(CHARS), (3, 6), generator=torch.Generator().manual_seed(1))


def test_qelm_round_trip_gives_identical_outputs(tmp_path, tiny_config, tokenizer, idx):
    model = QELM(tiny_config).eval()
    folder = save_checkpoint(tmp_path / "ck", model, tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, TOKENIZER]), "no temporary files left"
    ck = load_checkpoint(folder)
    assert type(ck.model) is QELM and ck.kind == "qelm" and not ck.model.training
    assert ck.config == tiny_config and ck.training_state is None
    assert ck.tokenizer.chars == tokenizer.chars
    assert torch.equal(ck.model(idx)[0], model(idx)[0])


def test_classical_twin_is_recorded_and_loads_as_classical(tmp_path, tiny_config, tokenizer, idx):
    twin = ClassicalLM(tiny_config).eval()
    save_checkpoint(tmp_path / "twin", twin, tokenizer)
    assert 'kind = "classical"' in (tmp_path / "twin" / CONFIG).read_text()
    ck = load_checkpoint(tmp_path / "twin")
    assert type(ck.model) is ClassicalLM and ck.kind == "classical"
    assert torch.equal(ck.model(idx)[0], twin(idx)[0])


def test_matched_model_loads_with_its_own_shrunk_config(tmp_path, tiny_config, tokenizer, idx):
    matched = ClassicalLM.matched_to(QELM(tiny_config)).eval()
    assert matched.config.d_model < tiny_config.d_model
    save_checkpoint(tmp_path / "matched", matched, tokenizer)
    ck = load_checkpoint(tmp_path / "matched")
    assert type(ck.model) is ClassicalLM and ck.kind == "classical" and ck.config == matched.config
    assert torch.equal(ck.model(idx)[0], matched(idx)[0])


def test_training_state_round_trips_with_the_step(tmp_path, tiny_config, tokenizer):
    model = QELM(tiny_config)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    loss.backward()
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "ck", model, tokenizer, training_state=state)
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.training_state["step"] == 7
    saved = ck.training_state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(saved, opt.state_dict()["state"][0]["exp_avg"])
    # saving without a state removes the stale one: it would not match the new weights
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    assert not (tmp_path / "ck" / TRAINING_STATE).exists()


def test_loading_on_another_backend_keeps_the_weights(tmp_path, tiny_config, tokenizer, idx):
    model = QELM(tiny_config).eval()
    save_checkpoint(tmp_path / "ck", model, tokenizer)
    ck = load_checkpoint(tmp_path / "ck", backend="lightning.qubit")
    assert ck.config.backend == "lightning.qubit" and ck.model.backend.name == "lightning.qubit"
    for (name, a), b in zip(model.state_dict().items(), ck.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.allclose(ck.model(idx)[0], model(idx)[0], atol=1e-5)


def test_unavailable_backend_is_reported(tmp_path, tiny_config, tokenizer):
    save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer)
    from qelm.backends.pennylane import installed

    if installed("pennylane_lightning.lightning_gpu"):
        pytest.skip("lightning.gpu is installed here")
    with pytest.raises(BackendUnavailable, match="lightning.gpu"):
        load_checkpoint(tmp_path / "ck", backend="lightning.gpu")


def test_weights_that_do_not_match_the_config_are_named(tmp_path, tiny_config, tokenizer):
    save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer)
    path = tmp_path / "ck" / CONFIG
    path.write_text(path.read_text().replace("d_model = 8", "d_model = 12"))
    with pytest.raises(ValueError, match=r"model.safetensors does not match config.toml .*d_model=12.*"
                                         r"expand.bias is \(8,\) in the file but \(12,\) for the config"):
        load_checkpoint(tmp_path / "ck")


def test_tokenizer_of_another_size_is_reported(tmp_path, tiny_config, tokenizer):
    save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer)
    CharTokenizer(CHARS + "xyz").save(tmp_path / "ck" / TOKENIZER)
    with pytest.raises(ValueError, match="tokenizer.json has 14 tokens but config.toml says vocab_size=11"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(ValueError, match="tokenizer has 14 tokens but the model's config says vocab_size=11"):
        save_checkpoint(tmp_path / "other", QELM(tiny_config), CharTokenizer(CHARS + "xyz"))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), "model.safetensors cannot be read"),
    (lambda f: (f / CONFIG).write_text("kind = [unclosed"), "config.toml is not valid TOML"),
    (lambda f: (f / TRAINING_STATE).write_bytes(b"garbage"), "training_state.pt cannot be read"),
    (lambda f: (f / TOKENIZER).write_text("{"), "tokenizer file .* is corrupt"),
])
def test_corrupt_files_are_reported_as_corrupt(tmp_path, tiny_config, tokenizer, damage, message):
    folder = save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer, training_state={"step": 1})
    damage(folder)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(folder)


def test_weights_and_state_from_different_steps_are_detected(tmp_path, tiny_config, tokenizer):
    model = QELM(tiny_config)
    save_checkpoint(tmp_path / "a", model, tokenizer, training_state={"step": 4})
    save_checkpoint(tmp_path / "b", model, tokenizer, training_state={"step": 8})
    os.replace(tmp_path / "b" / TRAINING_STATE, tmp_path / "a" / TRAINING_STATE)
    with pytest.raises(ValueError, match="model.safetensors is from step 4 but training_state.pt from step 8"):
        load_checkpoint(tmp_path / "a")


def test_missing_folder_files_and_run_folder_hint(tmp_path, tiny_config, tokenizer):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent")
    save_checkpoint(tmp_path / "run" / "qelm", QELM(tiny_config), tokenizer)
    save_checkpoint(tmp_path / "run" / "matched", ClassicalLM(tiny_config), tokenizer)
    with pytest.raises(FileNotFoundError, match=r"training run folder; pass one of its checkpoints, .*run/qelm or "
                                                r".*run/matched"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "qelm" / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_checkpoint(tmp_path / "run" / "qelm")


def test_unwritable_output_folder_is_reported(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match=r"output folder .*file/sub' is not writable"):
        ensure_writable_dir(tmp_path / "file" / "sub")

