"""Launch overhead, measured: a QELM on ``qelm.fused`` and its classical twin, in the same process, each call
timed every way it can run: eager, replayed from recorded CUDA graphs (``qelm.decode``; CUDA only) and
compiled (``torch.compile``, inductor). Four workloads:

* ``inference``: a no-grad forward of a (batch, T) batch;
* ``decode``: one new token after a prompt of T - 1 tokens (the prompt read untimed): the growing cache
  (eager), the static cache's step (static: eager; graphed, compiled, compiled and graphed);
* ``generation``: ``model.generate`` of ``--gen-tokens`` tokens after a prompt of T - gen_tokens, at each of
  ``--gen-batches``: dynamic cache eager (the path before graphs), static cache (graphed on CUDA), compiled;
  with a check that every way gave the same tokens from the same seed;
* ``training``: forward + backward + AdamW, eager and compiled (graphs are the backend's own, on by default).

Each timing stops early (at least one run) when one more run would pass ``--max-seconds``; compilation is
timed apart (first_call_s). Writes JSON with the machine, the GPU and the command; prints one line a figure.

    python benchmarks/launch.py --device cuda --seq-lens 512,2048 --batch 2 --out launch-h200.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch

from qelm import QELM, ClassicalLM, QELMConfig
from qelm.decode import Decoder, compile_model
from qelm.model import KVCache

WAYS = ("eager", "static", "graphs", "compiled", "compiled+graphs")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, budget: float) -> dict:
    """The first call (compilation, recording) timed apart, one more untimed, then up to ``repeats`` within
    ``budget`` seconds."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t
    fn()
    times: list[float] = []
    begin = time.perf_counter()
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - begin + statistics.median(times) > budget:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times), "first_call_s": first}


def _model(cls, config: QELMConfig, device: str, way: str):
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    model.cuda_graphs = "graphs" in way
    if way.startswith("compiled"):
        compile_model(model)
    return model


def _inference(model, idx):
    def run() -> None:
        with torch.no_grad():
            model(idx)
    return run


def _training(model, idx):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        _, loss = model(idx, idx)
        loss.backward()
        opt.step()
    return run


def _decode(model, idx, way: str):
    """One token's step after the prompt: the growing cache (eager way) or the static cache's step."""
    prompt, last = idx[:, :-1], idx[:, -1:]
    with torch.no_grad():
        kv = KVCache(len(model.blocks))
        model(prompt, cache=kv)
    if way == "eager":
        def dynamic() -> None:
            with torch.no_grad():
                held = KVCache(len(model.blocks))
                held.blocks, held.length = [dict(b) for b in kv.blocks], kv.length
                model(last, cache=held)
        return dynamic
    decoder = Decoder(model, idx.shape[0], idx.device, dict(temperature=1.0, top_k=None, top_p=None, min_p=None,
                                                            repetition_penalty=1.0), graphs="graphs" in way,
                      compiled={} if way.startswith("compiled") else None)
    decoder.load(kv.blocks, kv.length, idx, last)
    decoder.record()
    decoder.load(kv.blocks, kv.length, idx, last)

    def static() -> None:  # the same slot every time: the prompt fills all but one
        with torch.no_grad():
            decoder.cache.position.fill_(kv.length)
            decoder.length = kv.length
            decoder.step(None)
    return static


def _generation(model, prompt, n: int, implementation: str):
    def run():
        return model.generate(prompt, n, generator=torch.Generator(prompt.device).manual_seed(1),
                              cache_implementation=implementation)
    return run


def _write(args: argparse.Namespace, argv: list[str] | None, device: str, rows: list[dict]) -> None:
    if not args.out:
        return
    out = {
        "schema": "qelm.launch/1",
        "command": " ".join(["python", "benchmarks/launch.py"] + (argv if argv is not None else sys.argv[1:])),
        "method": METHOD,
        "config": QELMConfig().to_dict(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average": os.getloadavg(),
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
        "rows": rows,
    }
    with open(args.out + ".part", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(args.out + ".part", args.out)


METHOD = ("median of timed calls in one process, after the first call (timed apart as first_call_s: compilation, "
          "recording) and one more; each timing stops when one more run would pass max_seconds. eager: every "
          "kernel launched from Python (generation and decode: the growing cache); static: the static cache's step, "
          "eager; graphs: qelm.decode's recorded CUDA graphs (model.cuda_graphs); compiled: torch.compile "
          "(inductor, default mode: qelm.decode.compile_model, the cache-free forward and the decode step); "
          "compiled+graphs: those compiled functions recorded in qelm.decode's graphs; decode: one token after a prompt of T - 1 read untimed (sampling "
          "included in the static ways); generation: model.generate(prompt of T - gen_tokens, gen_tokens) with a "
          "seeded generator; same_tokens: the tokens equal the first way's")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seq-lens", default="512")
    p.add_argument("--batch", type=int, default=2, help="batch of inference, decode and training")
    p.add_argument("--gen-batches", default="1,8")
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--modes", default="inference,decode,generation,training")
    p.add_argument("--ways", default=",".join(WAYS), help="of " + ", ".join(WAYS))
    p.add_argument("--models", default="qelm,twin")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=10.0, help="budget of each timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    ways = [w for w in args.ways.split(",") if device == "cuda" or "graphs" not in w]
    classes = {"qelm": QELM, "twin": ClassicalLM}
    rows = []

    def record(row: dict) -> None:
        rows.append(row)
        _write(args, argv, device, rows)  # after every row: a run stopped by a time limit keeps what it measured
        figure = f"{row['median_s'] * 1e3:9.3f} ms" if "median_s" in row else row.get("error", "")
        rate = f" {row['tokens_per_s']:10,.0f} tok/s" if "tokens_per_s" in row else ""
        print(f"{row['mode']:10s} T={row['seq_len']:5d} B={row['batch']:2d} {row['model']:4s} {row['way']:16s} "
              f"{figure}{rate}" + (f" same_tokens={row['same_tokens']}" if "same_tokens" in row else ""), flush=True)

    for T in [int(t) for t in args.seq_lens.split(",")]:
        config = QELMConfig(context_len=T)
        gen = torch.Generator(device).manual_seed(0)
        idx = torch.randint(0, config.vocab_size, (args.batch, T), generator=gen, device=device)
        for mode in args.modes.split(","):  # both models per mode: a run stopped early has pairs to compare
            for name in args.models.split(","):
                batches = [int(b) for b in args.gen_batches.split(",")] if mode == "generation" else [args.batch]
                for B in batches:
                    reference = None
                    prompt = torch.randint(0, config.vocab_size, (B, max(1, T - args.gen_tokens)),
                                           generator=torch.Generator(device).manual_seed(B), device=device)
                    for way in ways:
                        if mode in ("inference", "training") and way == "static":
                            continue  # no cache to be static
                        if mode == "training" and "graphs" in way:  # the backend's own graphs in every way
                            if way == "graphs" or "compiled" in ways:
                                continue
                            way = "compiled"  # compiled+graphs alone: training compiled
                        row = {"mode": mode, "seq_len": T, "batch": B, "model": name, "way": way}
                        try:
                            model = _model(classes[name], config, device, way)
                            if mode == "inference":
                                fn = _inference(model, idx)
                            elif mode == "training":
                                fn = _training(model, idx)
                            elif mode == "decode":
                                fn = _decode(model, idx, way)
                            else:
                                fn = _generation(model, prompt, args.gen_tokens, "dynamic" if way == "eager" else "static")
                            row |= _timed(fn, device, args.repeats, args.max_seconds)
                            tokens = B * (args.gen_tokens if mode == "generation" else 1 if mode == "decode" else T)
                            row["tokens_per_s"] = tokens / row["median_s"]
                            if mode == "generation":
                                out = fn()
                                reference = out if reference is None else reference
                                row["same_tokens"] = bool(torch.equal(out, reference))
                        except Exception as e:  # a way that fails is a result: recorded, the others still run
                            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                        record(row)
                        model = fn = None  # its graphs and compiled code go with it
                        torch._dynamo.reset()
                        gc.collect()
    _write(args, argv, device, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
