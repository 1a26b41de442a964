"""A sweep small enough to watch it work: ``qelm sweep`` on ``examples/sweep_tiny.toml``.

Two configurations (quantum and fidelity attention), each trained at two seeds for 20 steps on the bundled
corpus beside its classical twin and its parameter-matched classical model; then the table, the Pareto
frontier, the verdict and the Pareto plot (``pareto.png`` in the sweep's folder, and a copy at ``--plot``). The
sweep needs Optuna (``pip install 'qelm-lab[sweep]'``); without it the script says so and stops.

    python examples/sweep.py --out runs/sweep-tiny [--plot frontier.png]

It runs the command line itself: ``qelm sweep --space examples/sweep_tiny.toml --out runs/sweep-tiny``.
"""

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from qelm.cli import main as qelm

SPACE = Path(__file__).resolve().parent / "sweep_tiny.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sweep-tiny", help="the sweep's folder, new or empty (default: sweep-tiny)")
    parser.add_argument("--plot", help="also copy the Pareto plot here (default: none)")
    args = parser.parse_args()
    if importlib.util.find_spec("optuna") is None:
        print("not run: qelm sweep needs Optuna, which is not installed here: pip install 'qelm-lab[sweep]'")
        return
    print(f"$ qelm sweep --space examples/{SPACE.name} --out {args.out}")
    rc = qelm(["sweep", "--space", str(SPACE), "--out", args.out])
    if rc:
        sys.exit(rc)
    if args.plot:
        print(f"copied the Pareto plot to {shutil.copyfile(Path(args.out) / 'pareto.png', args.plot)}")


if __name__ == "__main__":
    main()
