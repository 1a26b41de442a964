"""A reader racing a writer: one process saves a checkpoint at every step while this one loads it over and
over. Every load must succeed and be one save: its step label, its training state and its weights agree
(the writer fills every weight with the step number)."""

import subprocess
import sys
import textwrap
import time

import pytest

from qelm.checkpoint import load_checkpoint
from qelm.model_contents import read_training_state
from qelm.model_files import MANIFEST

WRITER = textwrap.dedent("""
    import sys, torch
    from qelm import QELMConfig
    from qelm.checkpoint import save_checkpoint
    from qelm.model import ClassicalLM
    from qelm.tokenizer import CharTokenizer

    torch.set_num_threads(1)
    tokenizer = CharTokenizer.from_text("abcdefghij")
    model = ClassicalLM(QELMConfig(vocab_size=tokenizer.vocab_size, d_model=8, n_heads=2, d_hidden=16, n_layers=1,
                                   context_len=6, n_qubits=2, circuit_layers=1))
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        save_checkpoint(sys.argv[1], model, tokenizer, training_state={"step": step}, info={"step": step})
""")


@pytest.mark.slow  # a writer process starts (seconds on a busy machine), then 2 s of racing
@pytest.mark.parametrize("seconds", [2.0])
def test_a_reader_racing_a_writer_reads_one_save_or_retries(tmp_path, seconds):
    folder = tmp_path / "ck"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (folder / MANIFEST).is_file():  # the writer's first save
            assert writer.poll() is None, writer.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never saved"
            time.sleep(0.05)
        loads, steps, end = 0, set(), time.monotonic() + seconds
        while time.monotonic() < end:
            ck = load_checkpoint(folder)
            weight = float(next(iter(ck.model.parameters())).detach().flatten()[0])
            assert ck.step == ck.training_state["step"] == ck.info["step"] == weight, (ck.step, weight)
            assert all(bool((p == weight).all()) for p in ck.model.parameters()), "weights of two saves"
            state = read_training_state(folder)
            assert state["step"] >= ck.step
            loads += 1
            steps.add(ck.step)
        assert writer.poll() is None, writer.stderr.read().decode()
    finally:
        writer.kill()
        writer.wait()
    assert loads >= 10 and len(steps) >= 3, (loads, steps)  # the race was run: many loads, many saves seen
