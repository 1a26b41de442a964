"""Names users meet: the types qelm exports, the modules behind qelm.train / qelm.compare / qelm.evaluate
(reachable, and callable as their functions), and old names that keep working one release with a
DeprecationWarning naming the new home."""

import importlib
import inspect
import types

import pytest

import qelm


def test_the_types_users_meet_are_exported():
    from qelm.backends import BackendUnavailable
    from qelm.checkpoint import Checkpoint
    from qelm.data import TextDataset
    from qelm.train import TrainResult, TrainSettings

    for name, obj in (("Checkpoint", Checkpoint), ("TextDataset", TextDataset), ("TrainResult", TrainResult),
                      ("TrainSettings", TrainSettings), ("BackendUnavailable", BackendUnavailable)):
        assert getattr(qelm, name) is obj and name in qelm.__all__
    assert all(hasattr(qelm, name) for name in qelm.__all__)


@pytest.mark.parametrize("name", ["train", "compare", "evaluate"])
def test_modules_are_reachable_and_call_their_function(name):
    import qelm.compare as compare_module
    import qelm.evaluate as evaluate_module
    import qelm.train as train_module

    module = {"train": train_module, "compare": compare_module, "evaluate": evaluate_module}[name]
    assert isinstance(module, types.ModuleType) and module is importlib.import_module(f"qelm.{name}")
    assert getattr(qelm, name) is module
    function = getattr(module, name)
    assert inspect.isfunction(function) and inspect.signature(module) == inspect.signature(function)


def test_calling_the_module_runs_the_function(tiny_config):
    comp = qelm.compare(tiny_config, batch_size=1)  # the module, called
    assert [m.name for m in comp.models] == ["qelm", "twin", "matched"]
    with pytest.raises(ValueError, match="no corpus given"):
        qelm.train(tiny_config, out="unused")


@pytest.mark.parametrize("old, new", [
    ("qelm.train:evaluate", "qelm.evaluate:evaluate"),
    ("qelm.train:generate_text", "qelm.evaluate:generate_text"),
    ("qelm.train:unigram_baseline", "qelm.evaluate:unigram_baseline"),
    ("qelm.train:init_distributed", "qelm.distributed:init_distributed"),
    ("qelm.train:read_metrics", "qelm.metrics:read_metrics"),
    ("qelm.plot:read_metrics", "qelm.metrics:read_metrics"),
    ("qelm.plot:read_runs", "qelm.metrics:read_runs"),
    ("qelm.draw:write_gallery", "qelm.gallery:write_gallery"),
    ("qelm.draw:gallery_drift", "qelm.gallery:gallery_drift"),
    ("qelm.compare:classic_config", "qelm.compare:published_config"),
    ("qelm.compare:CLASSIC_SETTING", "qelm.compare:PUBLISHED_SETTING"),
    ("qelm.compare:CLASSIC_CLAIM", "qelm.compare:PUBLISHED_CLAIM"),
])
def test_moved_names_still_work_and_warn(old, new):
    (old_module, old_name), (new_module, new_name) = old.split(":"), new.split(":")
    with pytest.warns(DeprecationWarning, match=rf"{old_module}\.{old_name} moved to .*{new_name}"):
        value = getattr(importlib.import_module(old_module), old_name)
    assert value is getattr(importlib.import_module(new_module), new_name)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        getattr(importlib.import_module(old_module), "no_such_name")


def test_old_loss_curve_plotter_and_plot_path_still_work(tmp_path):
    from qelm.compare import plot_path
    from qelm.train import plot_loss_curves

    with pytest.warns(DeprecationWarning, match="qelm.plot.plot_curves"):
        out = plot_loss_curves({"qelm": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}, tmp_path / "l.png",
                               unigram_loss=2.5)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.warns(DeprecationWarning, match="qelm.plot.figure_format"):
        assert plot_path(tmp_path / "x.svg") == (tmp_path / "x.svg", "svg")


def test_classic_is_the_old_name_of_published(tiny_config, cli):
    from qelm.compare import published_config

    with pytest.warns(DeprecationWarning, match="compare\\(published=...\\)"):
        comp = qelm.compare(published_config(context_len=2), classic=True, batch_size=1)
    assert comp.setting == "published" and comp.claim_verdict
    rc, out, err = cli("compare", "--classic", "--context", "2", "--batch-size", "1")
    assert rc == 0 and "Claim check:" in out and "--classic is now --published" in err
