"""Train a tiny QELM and its classical twin from Python, then evaluate, reload and sample.

    python examples/train_tiny.py [--steps 200] [--out runs/example]

The same run from the shell: ``qelm train --data qelm/data/corpus.txt --steps 200 --out runs/example``.
Every figure printed here is measured by this run; which model wins is whatever the numbers say.
"""

import argparse

import torch

from qelm import load_checkpoint
from qelm.data import bundled_config, bundled_corpus
from qelm.evaluate import evaluate, generate_text
from qelm.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="runs/example")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest

    def progress(event: str, name: str, info: dict) -> None:
        if event == "step" and "val_loss" in info:
            print(f"  {name:>4} step {info['step']:4d}: train loss {info['loss']:.3f}, "
                  f"validation perplexity {info['val_perplexity']:.2f}, {info['tokens_per_s']:.0f} tokens/s")

    # the tiny demo config ([model] + [train] tables); the corpus decides vocab_size
    result = train(bundled_config(), bundled_corpus(), steps=args.steps, out=args.out, overwrite=True,
                   callback=progress)
    print(result.verdict)

    # reload the QELM from its checkpoint folder and measure it again: the same number comes back
    ck = load_checkpoint(f"{args.out}/qelm")
    again = evaluate(ck.model, result.dataset.val_ids, batch_size=64, context_len=ck.config.context_len)
    print(f"reloaded QELM: validation perplexity {again['perplexity']:.3f} "
          f"(the run measured {result.qelm.val['perplexity']:.3f})")
    print("sample:", repr("The " + generate_text(ck.model, ck.tokenizer, "The ", max_new_tokens=80, seed=0)))


if __name__ == "__main__":
    main()
