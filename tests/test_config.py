"""QELMConfig: every impossible value names its field; TOML round trips."""

import pytest

from qelm import QELMConfig
from qelm.backends import BackendSpec
from qelm.config import check_fits, config_differences, read_toml


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("n_qubits", 0, "n_qubits=0 is invalid: use an integer >= 1"),
        ("n_qubits", 2.5, "n_qubits=2.5 is invalid"),
        ("d_model", 10, "d_model=10 is invalid: it must be divisible by n_heads=4"),
        ("vocab_size", 1, "vocab_size=1 is invalid: a language model needs at least 2 tokens"),
        ("embedding_circuit", "spiral", "embedding_circuit='spiral' is invalid: no circuit named 'spiral' is registered "
                                        "in this process (registered embedding circuits: angle, polar, amplitude)"),
        ("attention_circuit", "angle", "attention_circuit='angle' is invalid: circuit 'angle' is of kind 'embedding'; "
                                       "the attention slot runs one of attention (kind 'attention')"),
        ("feed_forward_circuit", "ring", "feed_forward_circuit='ring' is invalid: no circuit named 'ring'"),
        ("attention", "dense", "attention='dense' is invalid: choose one of quantum, fidelity, classical"),
        ("feed_forward", "mlp", "feed_forward='mlp' is invalid"),
        ("fidelity_method", "tomography", "fidelity_method='tomography' is invalid"),
        ("context_len", -3, "context_len=-3 is invalid"),
        ("n_layers", True, "n_layers=True is invalid"),
    ],
)
def test_invalid_values_name_the_field(field, value, message):
    kwargs = {"n_heads": 4, "d_model": 16, field: value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        QELMConfig(**kwargs)


def test_too_many_qubits_for_memory():
    """The machine's memory is checked where the model meets it (check_fits, at the batch it runs), not by
    the config, which describes the model on any machine."""
    big = QELMConfig(n_qubits=30)
    with pytest.raises(ValueError, match=r"n_qubits=30 is invalid: .* GiB of state vectors, more than this machine"):
        check_fits(big, 8)
    # the swap test doubles the register: fine as feature attention, too large as swap-test fidelity
    check_fits(QELMConfig(n_qubits=12), 8)
    with pytest.raises(ValueError, match="25 qubits"):
        check_fits(QELMConfig(n_qubits=12, attention="fidelity", fidelity_method="swap_test", context_len=64), 8)


def test_classical_model_never_checks_qubit_memory():
    cfg = QELMConfig(n_qubits=40, embedding="classical", attention="classical", feed_forward="classical")
    assert not cfg.uses_circuits


def test_toml_round_trip(tmp_path):
    cfg = QELMConfig(vocab_size=100, d_model=128, n_heads=4, d_hidden=256, embedding_circuit="polar")
    path = tmp_path / "model.toml"
    cfg.to_toml(path)
    assert QELMConfig.from_toml(path) == cfg


def test_malformed_toml_and_unknown_fields(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("d_model = [oops\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        QELMConfig.from_toml(bad)
    with pytest.raises(ValueError, match="unknown config field.*qbits.*valid fields are"):
        QELMConfig.from_dict({"qbits": 4})
    with pytest.raises(ValueError, match="does not exist"):
        QELMConfig.from_toml(tmp_path / "missing.toml")


def test_config_differences_name_each_architecture_field(tiny_config):
    other = tiny_config.replace(d_model=12, n_heads=3)
    assert config_differences(tiny_config, other) == ["d_model: 8 vs 12", "n_heads: 2 vs 3"]


def test_replaced_moves_shots_out_of_the_options():
    spec = BackendSpec()
    assert spec.replaced(None, {}) is spec
    moved = spec.replaced("qiskit.aer", {"shots": 100, "seed": 3})
    assert moved == BackendSpec("qiskit.aer", 100, {"seed": 3})


def test_read_toml_names_the_file_and_what_is_wrong(tmp_path):
    (tmp_path / "ok.toml").write_text("[model]\nd_model = 8\n")
    assert read_toml(tmp_path / "ok.toml") == {"model": {"d_model": 8}}
    (tmp_path / "bad.toml").write_text("d_model = [oops\n")
    with pytest.raises(ValueError, match=r"config file '.*bad.toml' is not valid TOML \("):
        read_toml(tmp_path / "bad.toml")
    (tmp_path / "latin1.toml").write_bytes(b"name = '\xe9'\n")
    with pytest.raises(ValueError, match="checkpoint X: config.toml is not valid TOML"):
        read_toml(tmp_path / "latin1.toml", what="checkpoint X: config.toml")
    with pytest.raises(FileNotFoundError, match="config file .*missing.toml' does not exist"):
        read_toml(tmp_path / "missing.toml")


def test_the_backend_settings_are_one_spec_checked_in_one_place():
    """How a model runs is a BackendSpec, not a field of the config: checked in one place (problems, named by
    their config-file names), built in one place; the model holds it."""
    from qelm import QELM
    from qelm.errors import BackendError

    assert BackendSpec().problems() == [] and BackendSpec("default.qubit", 64, {"seed": 3}).kwargs() == \
        {"shots": 64, "seed": 3}
    fused_shots = BackendSpec("qelm.fused", 64)
    assert [name for name, _ in fused_shots.problems()] == ["shots"]
    with pytest.raises(BackendError, match="shots=64 is invalid: backend qelm.fused is exact"):
        fused_shots.build()
    with pytest.raises(BackendError, match="shots=64 is invalid: backend qelm.fused is exact"):
        QELM(QELMConfig(d_model=8), fused_shots)
    for name, value, message in (("backend", "ibm.brisbane", "backend='ibm.brisbane' is invalid: choose one of "
                                  "default.qubit, lightning.gpu"), ("shots", 0, "shots=0 is invalid")):
        with pytest.raises(BackendError, match=message.replace(".", r"\.")):
            BackendSpec.from_fields({name: value}).check()
    assert BackendSpec("default.qubit", 64, {"seed": 3}).build().shots == 64
    model = QELM(QELMConfig(d_model=8), BackendSpec("default.qubit", 64, {"seed": 3}))
    assert model.spec == BackendSpec("default.qubit", 64, {"seed": 3}) and model.backend.shots == 64
    model.set_backend("qelm.fused")
    assert model.spec == BackendSpec() and model.config == QELMConfig(d_model=8)


def test_the_config_refuses_runtime_fields_naming_the_runtime_table():
    for fields in ({"backend": "default.qubit"}, {"shots": 10}, {"backend_options": {}}, {"batch_hint": 8}):
        with pytest.raises(ValueError, match=r"say how the model runs, not what it is: give them under \[runtime\]"):
            QELMConfig.from_dict({"d_model": 8, **fields})
    with pytest.raises(TypeError):
        QELMConfig(backend="default.qubit")  # type: ignore[call-arg]


def test_old_config_files_with_backend_fields_load_into_the_runtime_part(tmp_path):
    """Config files and checkpoints written before [runtime] carry backend, shots, backend_options (and
    batch_hint) among the model's fields: they still load, and those fields are the runtime spec."""
    from qelm.train import load_run_config

    path = tmp_path / "old.toml"
    path.write_text('[model]\nd_model = 8\nn_heads = 2\nbackend = "default.qubit"\nshots = 32\nbatch_hint = 4\n'
                    '[model.backend_options]\nseed = 7\n', encoding="utf-8")
    config, spec, settings = load_run_config(path)
    assert (config.d_model, spec, settings) == (8, BackendSpec("default.qubit", 32, {"seed": 7}), {})
    new = tmp_path / "new.toml"
    new.write_text('[model]\nd_model = 8\nn_heads = 2\n[runtime]\nbackend = "default.qubit"\nshots = 32\n'
                   '[runtime.backend_options]\nseed = 7\n', encoding="utf-8")
    assert load_run_config(new)[:2] == (config, spec)
    new.write_text('[model]\nd_model = 8\n[runtime]\nbackend = "default.qubit"\nshot = 32\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown runtime field.*shot: valid fields are backend, shots"):
        load_run_config(new)
