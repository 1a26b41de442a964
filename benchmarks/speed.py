"""Speed and memory of the QELM on every backend beside its classical twin, written to benchmarks/results/.

Runs :func:`qelm.bench.run_benchmark` (the harness behind ``qelm bench``; same flags) with every backend that
fits the device by default, prints the Markdown table and the fitted exponents, and writes
``benchmarks/results/bench-<device>[-quick].json`` (``--json`` to choose another path; ``--plot`` for a
figure). A backend that cannot run here is recorded with its error in the JSON; the run goes on.

    python benchmarks/speed.py --quick                          # about a minute: seq lens 16,32,64
    python benchmarks/speed.py --qubit-sweep 2,4,6,8 --max-seconds 60  # the committed CPU run (see README.md)
    python benchmarks/speed.py --device cuda                    # on a CUDA machine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qelm.bench import plot, write_json
from qelm.cli import USER_ERRORS
from qelm.cli.bench import add_arguments, command_line, measure, report

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_BACKENDS = {"cpu": ["default.qubit", "lightning.qubit", "qiskit.aer"], "cuda": ["default.qubit", "lightning.gpu"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        device = args.device or "cpu"
        if not args.backend:
            args.backend = DEFAULT_BACKENDS[device]
        if not args.json or args.json == "-":  # this script always writes its file
            args.json = str(RESULTS / f"bench-{device}{'-quick' if args.quick else ''}.json")
        result = measure(args)
    except USER_ERRORS as e:
        print(f"speed.py: error: {e}", file=sys.stderr)
        return 2
    # the command as a reader would retype it, with paths relative to the repository root
    root = RESULTS.parent.parent
    json_path = Path(args.json).resolve()
    args.json = str(json_path.relative_to(root)) if json_path.is_relative_to(root) else args.json
    result.command = command_line(args, "python benchmarks/speed.py")
    print(report(result))
    print(f"\nwrote {write_json(result, json_path)}")
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
