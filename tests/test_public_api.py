"""Names users meet: the types qelm exports, and one spelling of each name (the verbs in their modules,
no callable modules, no old names kept alive)."""

import importlib
import inspect
import types

import pytest

import qelm


def test_the_types_users_meet_are_exported():
    from qelm.backends import BackendSpec, BackendUnavailable
    from qelm.checkpoint import Checkpoint
    from qelm.data import TextDataset
    from qelm.train import TrainOverrides, TrainResult, TrainSettings

    for name, obj in (("Checkpoint", Checkpoint), ("TextDataset", TextDataset), ("TrainResult", TrainResult),
                      ("TrainSettings", TrainSettings), ("TrainOverrides", TrainOverrides),
                      ("BackendUnavailable", BackendUnavailable), ("BackendSpec", BackendSpec)):
        assert getattr(qelm, name) is obj and name in qelm.__all__
    assert all(hasattr(qelm, name) for name in qelm.__all__)


@pytest.mark.parametrize("name", ["train", "compare", "evaluate"])
def test_each_verb_lives_in_its_module_and_the_module_is_a_plain_module(name):
    module = importlib.import_module(f"qelm.{name}")
    assert type(module) is types.ModuleType and not callable(module)
    assert inspect.isfunction(getattr(module, name)) and name not in qelm.__all__


@pytest.mark.parametrize("old", [
    "qelm.train:evaluate", "qelm.train:generate_text", "qelm.train:unigram_baseline", "qelm.train:init_distributed",
    "qelm.train:read_metrics", "qelm.train:plot_loss_curves", "qelm.plot:read_metrics", "qelm.plot:read_runs",
    "qelm.checkpoint:config_differences", "qelm.checkpoint:with_backend", "qelm.draw:write_gallery",
    "qelm.draw:gallery_drift", "qelm.compare:classic_config", "qelm.compare:CLASSIC_SETTING",
    "qelm.compare:CLASSIC_CLAIM", "qelm.compare:plot_path",
])
def test_old_names_are_gone(old):
    module, name = old.split(":")
    assert not hasattr(importlib.import_module(module), name), f"{old} has one home, not two"


def test_compare_takes_published_only():
    from qelm.compare import compare

    assert "classic" not in inspect.signature(compare).parameters
