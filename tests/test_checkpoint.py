"""Checkpoint folders: exact round trips, the classical kind, a save that commits as one unit wherever it
is cut, and a clear error for every way a folder can be wrong."""

import json
import os
import shutil
import stat

import pytest
import torch

import qelm.model_files
from qelm import QELM, ClassicalLM
from qelm.backends import BackendUnavailable
from qelm.checkpoint import load_checkpoint, save_checkpoint
from qelm.model_contents import read_training_state
from qelm.model_files import (CONFIG, CONFIG_JSON, MANIFEST, PENDING, TOKENIZER, TRAINING_STATE, WEIGHTS, checkpoint_files,
                              ensure_writable_dir, recover_checkpoint)
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
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CONFIG_JSON, TOKENIZER, MANIFEST]), \
        "no temporary files left"
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


def test_a_checkpoint_saved_after_a_backend_switch_loads_on_that_backend(tmp_path, tiny_config, tokenizer, idx):
    model = QELM(tiny_config).eval().set_backend("lightning.qubit")
    assert tiny_config.backend == "qelm.fused", "set_backend changes the model's own copy of the config"
    ck = load_checkpoint(save_checkpoint(tmp_path / "ck", model, tokenizer))
    assert ck.config == tiny_config.replace(backend="lightning.qubit") and ck.model.backend.name == "lightning.qubit"
    assert torch.allclose(ck.model(idx)[0], model(idx)[0], atol=1e-6)


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
    with pytest.raises(ValueError, match="config.toml is not the file that was saved"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / MANIFEST).unlink()  # a folder put together by hand: its files are loaded unchecked
    with pytest.raises(ValueError, match=r"model.safetensors does not match config.toml .*d_model=12.*"
                                         r"expand.bias is \(8,\) in the file but \(12,\) for the config"):
        load_checkpoint(tmp_path / "ck")


def test_tokenizer_of_another_size_is_reported(tmp_path, tiny_config, tokenizer):
    save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer)
    CharTokenizer(CHARS + "xyz").save(tmp_path / "ck" / TOKENIZER)
    (tmp_path / "ck" / MANIFEST).unlink()
    with pytest.raises(ValueError, match="tokenizer.json has 14 tokens but config.toml says vocab_size=11"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(ValueError, match="tokenizer has 14 tokens but the model's config says vocab_size=11"):
        save_checkpoint(tmp_path / "other", QELM(tiny_config), CharTokenizer(CHARS + "xyz"))


DAMAGE = {
    WEIGHTS: (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), "model.safetensors cannot be read"),
    CONFIG: (lambda f: (f / CONFIG).write_text("kind = [unclosed"), "config.toml is not valid TOML"),
    TRAINING_STATE: (lambda f: (f / TRAINING_STATE).write_bytes(b"garbage"), "training_state.pt cannot be read"),
    TOKENIZER: (lambda f: (f / TOKENIZER).write_text("{"), "tokenizer file .* is corrupt"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_an_edited_or_damaged_file_is_named(tmp_path, tiny_config, tokenizer, name):
    folder = save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer, training_state={"step": 1})
    damage, unchecked_message = DAMAGE[name]
    damage(folder)
    with pytest.raises(ValueError, match=rf"is corrupt: {name} is not the file that was saved .*remove checkpoint.json"):
        load_checkpoint(folder)
    # without the manifest the files are read as they are, and a broken one still fails by name
    (folder / MANIFEST).unlink()
    with pytest.raises(ValueError, match=unchecked_message):
        load_checkpoint(folder)


def test_a_tokenizer_edited_by_hand_is_refused(tmp_path, tiny_config, tokenizer):
    """The same vocabulary size, another order: the model would read every token as another one."""
    folder = save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer)
    CharTokenizer(CHARS[::-1]).save(folder / TOKENIZER)
    with pytest.raises(ValueError, match="tokenizer.json is not the file that was saved"):
        load_checkpoint(folder)


def test_a_file_the_manifest_lists_must_be_there(tmp_path, tiny_config, tokenizer):
    folder = save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer, training_state={"step": 1})
    (folder / TRAINING_STATE).unlink()
    with pytest.raises(FileNotFoundError, match="has no training_state.pt, which its checkpoint.json lists"):
        load_checkpoint(folder)


def test_weights_and_state_from_different_steps_are_detected(tmp_path, tiny_config, tokenizer):
    model = QELM(tiny_config)
    save_checkpoint(tmp_path / "a", model, tokenizer, training_state={"step": 4})
    save_checkpoint(tmp_path / "b", model, tokenizer, training_state={"step": 8})
    os.replace(tmp_path / "b" / TRAINING_STATE, tmp_path / "a" / TRAINING_STATE)
    with pytest.raises(ValueError, match="training_state.pt is not the file that was saved"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "a" / MANIFEST).unlink()  # an older folder: the steps recorded in both files still catch it
    with pytest.raises(ValueError, match="model.safetensors is from step 4 but training_state.pt from step 8"):
        load_checkpoint(tmp_path / "a")


def test_files_take_the_umask_like_every_other_file(tmp_path, tiny_config, tokenizer):
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            folder = save_checkpoint(tmp_path / oct(umask), QELM(tiny_config), tokenizer, training_state={"step": 1})
        finally:
            os.umask(old)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert modes == dict.fromkeys([WEIGHTS, CONFIG, CONFIG_JSON, TOKENIZER, TRAINING_STATE, MANIFEST], mode), (oct(umask), modes)


def test_a_diverged_model_is_never_saved_and_never_loaded(tmp_path, tiny_config, tokenizer):
    model = QELM(tiny_config)
    save_checkpoint(tmp_path / "ck", model, tokenizer, training_state={"step": 1})
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights hold NaN or infinity \(lm_head.weight\): a diverged model is not saved"):
        save_checkpoint(tmp_path / "ck", model, tokenizer, training_state={"step": 2})
    assert load_checkpoint(tmp_path / "ck").training_state["step"] == 1, "the good checkpoint is kept"
    from safetensors.torch import save_file  # one written by other means is refused on load, by name
    (tmp_path / "ck" / MANIFEST).unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "ck" / WEIGHTS),
              metadata={"step": "1"})
    with pytest.raises(ValueError, match="holds NaN or infinity in lm_head.weight"):
        load_checkpoint(tmp_path / "ck")


class _Cut(BaseException):
    """A save stopped dead (as by SIGKILL): no handler of the code under test catches it."""


def _cut_save_at(monkeypatch, event):
    """Make the ``event``-th file operation of a save stop it: every file written, moved or removed counts."""
    count = [0]

    def counting(fn):
        def wrapped(*args, **kwargs):
            count[0] += 1
            if count[0] == event:
                raise _Cut
            return fn(*args, **kwargs)
        return wrapped

    for name in ("fsync_path", "atomic_write"):
        monkeypatch.setattr(qelm.model_files, name, counting(getattr(qelm.model_files, name)))
    for name in ("replace", "unlink"):
        monkeypatch.setattr(qelm.model_files.os, name, counting(getattr(os, name)))
    monkeypatch.setattr(qelm.model_files.shutil, "rmtree", counting(shutil.rmtree))
    return count


def test_a_save_cut_anywhere_leaves_the_old_or_the_new_checkpoint_whole(tmp_path, tiny_config, tokenizer, monkeypatch):
    old, new = QELM(tiny_config), QELM(tiny_config)  # two draws of the weights
    with monkeypatch.context() as m:  # how many file operations one save takes
        total = _cut_save_at(m, event=0)
        save_checkpoint(tmp_path / "count", new, tokenizer, training_state={"step": 8})
    assert total[0] >= 10
    seen = set()
    for event in range(1, total[0] + 1):
        folder = tmp_path / f"cut{event}"
        save_checkpoint(folder, old, tokenizer, training_state={"step": 4})
        with monkeypatch.context() as m:
            _cut_save_at(m, event)
            with pytest.raises(_Cut):
                save_checkpoint(folder, new, tokenizer, training_state={"step": 8})
        committed = json.loads((folder / MANIFEST).read_text())["step"] == 8 or (folder / PENDING / MANIFEST).is_file()
        ck = load_checkpoint(folder)  # a reader, while the folder is as the cut left it
        step = ck.training_state["step"]
        assert step == (8 if committed else 4), event
        expected = new if step == 8 else old
        for (name, a), b in zip(expected.state_dict().items(), ck.model.state_dict().values()):
            assert torch.equal(a, b), (event, name)
        assert read_training_state(folder)["step"] == step
        recover_checkpoint(folder)  # what the next save or resume does first
        assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CONFIG_JSON, TOKENIZER, TRAINING_STATE, MANIFEST])
        assert load_checkpoint(folder).training_state["step"] == step
        seen.add(step)
    assert seen == {4, 8}, "cut both before and after the commit"


def test_the_first_save_cut_before_its_commit_is_no_checkpoint(tmp_path, tiny_config, tokenizer, monkeypatch):
    with monkeypatch.context() as m:
        _cut_save_at(m, 2)
        with pytest.raises(_Cut):
            save_checkpoint(tmp_path / "ck", QELM(tiny_config), tokenizer, training_state={"step": 2})
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint yet: its first save was interrupted"):
        checkpoint_files(tmp_path / "ck")
    recover_checkpoint(tmp_path / "ck")
    assert list((tmp_path / "ck").iterdir()) == []


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

