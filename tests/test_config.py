"""QELMConfig: every impossible value names its field; TOML round trips."""

import pytest

from qelm import QELMConfig
from qelm.config import config_differences, read_toml, with_backend


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("n_qubits", 0, "n_qubits=0 is invalid: use an integer >= 1"),
        ("n_qubits", 2.5, "n_qubits=2.5 is invalid"),
        ("d_model", 10, "d_model=10 is invalid: it must be divisible by n_heads=4"),
        ("vocab_size", 1, "vocab_size=1 is invalid: a language model needs at least 2 tokens"),
        ("embedding_circuit", "spiral", "embedding_circuit='spiral' is invalid: choose one of angle, polar, amplitude"),
        ("attention", "dense", "attention='dense' is invalid: choose one of quantum, fidelity, classical"),
        ("feed_forward", "mlp", "feed_forward='mlp' is invalid"),
        ("fidelity_method", "tomography", "fidelity_method='tomography' is invalid"),
        ("backend", "ibm.brisbane", "backend='ibm.brisbane' is invalid: choose one of default.qubit, lightning.gpu"),
        ("shots", 0, "shots=0 is invalid"),
        ("context_len", -3, "context_len=-3 is invalid"),
        ("n_layers", True, "n_layers=True is invalid"),
    ],
)
def test_invalid_values_name_the_field(field, value, message):
    kwargs = {"n_heads": 4, "d_model": 16, field: value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        QELMConfig(**kwargs)


def test_too_many_qubits_for_memory():
    with pytest.raises(ValueError, match=r"n_qubits=30 is invalid: .* GiB of state vectors, more than this machine"):
        QELMConfig(n_qubits=30)
    # the swap test doubles the register: fine as feature attention, too large as swap-test fidelity
    QELMConfig(n_qubits=12)
    with pytest.raises(ValueError, match="25 qubits"):
        QELMConfig(n_qubits=12, attention="fidelity", fidelity_method="swap_test", context_len=64)


def test_classical_model_never_checks_qubit_memory():
    cfg = QELMConfig(n_qubits=40, embedding="classical", attention="classical", feed_forward="classical")
    assert not cfg.uses_circuits


def test_toml_round_trip(tmp_path):
    cfg = QELMConfig(vocab_size=100, d_model=128, n_heads=4, d_hidden=256, embedding_circuit="polar", shots=None,
                     backend_options={"seed": 3})
    path = tmp_path / "model.toml"
    cfg.to_toml(path)
    assert QELMConfig.from_toml(path) == cfg
    assert QELMConfig.from_toml(cfg.replace(backend="default.qubit", shots=100).to_toml()).shots == 100


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
    other = tiny_config.replace(d_model=12, n_heads=3, backend="lightning.qubit")
    assert config_differences(tiny_config, other) == ["d_model: 8 vs 12", "n_heads: 2 vs 3"]


def test_with_backend_moves_shots_out_of_the_options(tiny_config):
    assert with_backend(tiny_config, None, {}) is tiny_config
    moved = with_backend(tiny_config, "qiskit.aer", {"shots": 100, "seed": 3})
    assert (moved.backend, moved.shots, moved.backend_options) == ("qiskit.aer", 100, {"seed": 3})
    assert config_differences(tiny_config, moved) == [], "how to run is not what the model is"


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
    """How a model runs is a BackendSpec: the config's backend fields read as one, and the spec's problems
    are the config's messages."""
    from qelm.backends import BackendSpec
    from qelm.errors import BackendError

    config = QELMConfig(backend="default.qubit", shots=64, backend_options={"seed": 3})
    assert config.runtime == BackendSpec("default.qubit", 64, {"seed": 3})
    assert config.backend_kwargs() == {"shots": 64, "seed": 3}
    assert BackendSpec().problems() == [] and QELMConfig().runtime == BackendSpec()
    fused_shots = BackendSpec("qelm.fused", 64)
    assert [name for name, _ in fused_shots.problems()] == ["shots"]
    with pytest.raises(BackendError, match="shots=64 is invalid: backend qelm.fused is exact"):
        fused_shots.build()
    with pytest.raises(ValueError, match="config field shots=64 is invalid: backend qelm.fused is exact"):
        QELMConfig(shots=64)
    assert BackendSpec("default.qubit", 64, {"seed": 3}).build().shots == 64


def test_old_config_files_with_backend_fields_load_into_the_runtime_part(tmp_path):
    """Config files and checkpoints written so far carry backend, shots and backend_options among the model's
    fields: they still load, and those fields are the runtime spec the model is built with."""
    from qelm import QELM
    from qelm.backends import BackendSpec

    path = tmp_path / "old.toml"
    path.write_text('[model]\nd_model = 8\nn_heads = 2\nbackend = "default.qubit"\nshots = 32\n'
                    '[model.backend_options]\nseed = 7\n', encoding="utf-8")
    config = QELMConfig.from_toml(path)
    assert config.runtime == BackendSpec("default.qubit", 32, {"seed": 7})
    assert BackendSpec.from_fields(config.to_dict()) == config.runtime
    model = QELM(config)
    assert (model.backend.name, model.backend.shots) == ("default.qubit", 32)
    # the runtime given apart from the config wins, and the model's config records it
    exact = QELM(config, BackendSpec())
    assert (exact.backend.name, exact.config.shots, exact.config.backend_options) == ("qelm.fused", None, {})
    assert config.shots == 32  # the caller's config is untouched
