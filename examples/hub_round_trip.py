"""The Hugging Face round trip: save_pretrained writes model.safetensors and config.json into a folder
(push_to_hub sends the same folder to the Hub), from_pretrained reads it back, and the logits are the same.

    python examples/hub_round_trip.py [--out runs/pretrained]
"""

import argparse

import torch

from qelm import QELM, QELMConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pretrained", help="the folder to write (default runs/pretrained)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = QELM(QELMConfig(vocab_size=16, d_model=8, n_heads=2, context_len=8, n_qubits=2, circuit_layers=1)).eval()
    model.save_pretrained(args.out)  # model.push_to_hub("you/qelm-tiny") sends the same files
    again = QELM.from_pretrained(args.out)  # a Hub id ("you/qelm-tiny") works the same way
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        diff = (model(idx)[0] - again(idx)[0]).abs().max().item()
    print(f"reloaded from {args.out}: {again.num_parameters()} parameters, backend {again.backend.describe()}, "
          f"max |logits difference| = {diff:.1e}")


if __name__ == "__main__":
    main()
