"""One decode step on CUDA, QELM beside its twin (default config, T = 512, a prompt of 300 tokens): the kernels
an eager static-cache step launches and their GPU time (``torch.profiler``), and the recorded step's replay
time back to back (what generation sees: the host queues the next replay while the GPU runs) and with a
synchronization after each (one token's latency). ``--profile``: what three back-to-back replays spend their
GPU time on, and the largest gaps between their kernels.

    python benchmarks/gpu/decode_kernels.py [--profile]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.backends.cuda_graph import fixed_weights
from qelm.decode import Decoder
from qelm.model import KVCache

SAMPLING = dict(temperature=1.0, top_k=None, top_p=None, min_p=None, repetition_penalty=1.0)


def _kernels(p) -> list:
    return sorted((e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                  key=lambda e: e.time_range.start)


def _decoder(model, kv, idx, graphs: bool) -> Decoder:
    d = Decoder(model, idx.shape[0], idx.device, SAMPLING, graphs=graphs)
    d.load(kv.blocks, kv.length, idx, idx[:, -1:])
    d.record()
    d.load(kv.blocks, kv.length, idx, idx[:, -1:])
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="where three replays spend their GPU time")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    for name, cls in (("qelm", QELM), ("twin", ClassicalLM)):
        for B in (8, 1):
            torch.manual_seed(0)
            model = cls(QELMConfig(context_len=512)).cuda().eval()
            idx = torch.randint(0, 64, (B, 300), device="cuda")
            kv = KVCache(len(model.blocks))
            with torch.no_grad():
                model(idx, cache=kv)
            eager = _decoder(model, kv, idx, graphs=False)
            with torch.no_grad(), fixed_weights(eager._fixed):  # as the recorded step: the matrices built once
                for _ in range(3):
                    eager.step(None)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as p:
                    eager.step(None)
                    torch.cuda.synchronize()
            kernels = _kernels(p)
            graphed = _decoder(model, kv, idx, graphs=True)
            with torch.no_grad():
                for _ in range(5):
                    graphed.step(None)
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(150):
                    graphed.step(None)
                torch.cuda.synchronize()
                back = (time.perf_counter() - t) / 150
                latency = []
                for _ in range(40):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    graphed.step(None)
                    torch.cuda.synchronize()
                    latency.append(time.perf_counter() - t)
            print(f"{name} B={B}: kernels per decode step {len(kernels)}, their GPU time "
                  f"{sum(e.device_time for e in kernels):.1f} us; recorded step back to back {back * 1e6:.1f} us, "
                  f"synchronized (median) {statistics.median(latency) * 1e6:.1f} us", flush=True)
            if args.profile and B == 8:
                graphed.length = kv.length
                graphed.cache.position.fill_(kv.length)
                with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
                    for _ in range(3):
                        graphed.step(None)
                    torch.cuda.synchronize()
                ev = _kernels(p)
                span = (ev[-1].time_range.end - ev[0].time_range.start) / 3 if ev else 0.0
                print(f"   replays: {len(ev) / 3:.0f} GPU events a step, busy {sum(e.device_time for e in ev) / 3:.1f} us, "
                      f"span {span:.1f} us")
                by: dict[str, float] = {}
                for e in ev:
                    by[e.name[:80]] = by.get(e.name[:80], 0.0) + e.device_time / 3
                for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:8]:
                    print(f"   {v:8.1f} us  {k}")
                gaps = sorted((b.time_range.start - a.time_range.end, a.name[:50], b.name[:50]) for a, b in itertools.pairwise(ev))
                for gap, a, b in gaps[-4:]:
                    print(f"   gap {gap:.1f} us after {a} before {b}")


if __name__ == "__main__":
    main()
