"""qelm.distributed: two data-parallel processes (gloo, one global batch split over them) train to the
losses and weights of one process."""

import pytest
import torch
import torch.multiprocessing as mp

from qelm import QELMConfig
from qelm.checkpoint import load_checkpoint
from qelm.data import TextDataset
from qelm.metrics import METRICS, read_metrics
from qelm.train import train

PERIODIC = "hello world. " * 60  # the text of the periodic fixture: the spawned workers read it too

pytestmark = pytest.mark.usefixtures("_one_thread")


def tiny(vocab_size: int) -> QELMConfig:
    return QELMConfig(vocab_size=vocab_size, d_model=8, n_heads=2, d_hidden=16, n_layers=1, context_len=8, n_qubits=2,
                      circuit_layers=1)


def _ddp_worker(rank, world, rendezvous, out, steps):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        ds = TextDataset.from_text(PERIODIC)
        train(tiny(ds.vocab_size), ds, steps=steps, batch_size=4, lr=0.02, seed=3, out=out, twin=False, eval_every=steps)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, periodic):
    steps = 4
    one = train(tiny(periodic.vocab_size), periodic, steps=steps, batch_size=4, lr=0.02, seed=3, out=tmp_path / "one",
                twin=False, eval_every=steps)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "two"), steps), nprocs=2, join=True)
    assert not (tmp_path / "two" / "twin").exists()
    for model in ("qelm", "matched"):  # the matched model trains data-parallel like the QELM
        two = read_metrics(tmp_path / "two" / model / METRICS)
        run = getattr(one, model)
        assert [r["step"] for r in two] == list(range(1, steps + 1))
        assert [r["loss"] for r in two] == pytest.approx(run.losses, rel=1e-5, abs=1e-6)
        assert two[-1]["val_loss"] == pytest.approx(run.val["loss"], rel=1e-5)
        loaded = load_checkpoint(tmp_path / "two" / model).model
        idx = periodic.val_ids[:32].view(4, 8)
        assert torch.allclose(loaded(idx)[0], run.model.eval()(idx)[0], rtol=1e-4, atol=1e-5), model
    # the QELM's weights too; not the classical model's: its attention key bias has a zero gradient (softmax
    # ignores a shift shared by all keys), and AdamW turns that zero's rounding noise into lr-sized steps
    weights = load_checkpoint(tmp_path / "two" / "qelm").model.state_dict()
    for name, p in one.qelm.model.state_dict().items():
        assert torch.allclose(p, weights[name], rtol=1e-4, atol=1e-6), name
