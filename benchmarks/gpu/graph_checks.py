"""The GPU tests of ``tests/test_decode.py`` as a plain script, for a machine without pytest: a graphed forward
equals the eager one, and graphed generation gives the growing cache's tokens for the same seed (QELM and
twin, greedy and sampled, past context_len), with no warning. Prints one line a check; exit status 1 if any
fails; ``--out FILE`` writes them as JSON with the GPU's name.

    python benchmarks/gpu/graph_checks.py --out checks.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch

from qelm import QELM, ClassicalLM, QELMConfig

SAMPLING = [dict(temperature=0), dict(), dict(top_k=5, temperature=0.7), dict(top_p=0.8, repetition_penalty=1.3),
            dict(min_p=0.1, repetition_penalty=0.8)]


def _forward(cls) -> str | None:
    torch.manual_seed(0)
    model = cls(QELMConfig(context_len=64)).cuda().eval()
    idx = torch.randint(0, 64, (2, 64), device="cuda")
    with torch.no_grad():
        graphed = [model(idx)[0] for _ in range(3)]
        model.cuda_graphs = False
        eager = model(idx)[0]
    if model._replays.replays != 3:
        return f"{model._replays.replays} replays, not 3"
    worst = max(float((g - eager).abs().max()) for g in graphed)
    return None if worst <= 1e-5 else f"graphed logits differ from eager by {worst:.2e}"


def _generation(cls, options: dict) -> str | None:
    torch.manual_seed(0)
    model = cls(QELMConfig(context_len=32)).cuda().eval()
    idx = torch.randint(0, 64, (4, 8), device="cuda")
    got = [model.generate(idx, 40, generator=torch.Generator("cuda").manual_seed(s), **options) for s in (1, 2)]
    if not any(d._replay is not None for d in model._decoders.values()):
        return "no decode step was recorded"
    want = [model.generate(idx, 40, generator=torch.Generator("cuda").manual_seed(s), cache_implementation="dynamic",
                           **options) for s in (1, 2)]
    same = all(torch.equal(a, b) for a, b in zip(got, want))
    return None if same else "graphed tokens differ from the growing cache's"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    checks = []
    for cls in (QELM, ClassicalLM):
        cases = [("forward", lambda c=cls: _forward(c))]
        cases += [(f"generation {o}", lambda c=cls, o=o: _generation(c, o)) for o in SAMPLING]
        for name, check in cases:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    failure = check()
                except Exception as e:  # a crash is a failed check, reported with the others
                    failure = f"{type(e).__name__}: {e}"
            failure = failure or "; ".join(str(w.message) for w in caught if "CUDA graph" in str(w.message)) or None
            checks.append({"model": cls.__name__, "check": name, "ok": failure is None, "failure": failure})
            print(f"{'ok  ' if failure is None else 'FAIL'} {cls.__name__:11s} {name}" + (f": {failure}" if failure else ""),
                  flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(["python", "benchmarks/gpu/graph_checks.py"] + (argv or sys.argv[1:])),
                       "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": checks}, f, indent=1)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
