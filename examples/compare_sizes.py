"""How much smaller is a QELM, honestly? Measure it against its classical twins.

Builds the setting of a published QELM claim (vocab 100, d_model 128, 4 heads, hidden 256), its full-size
classical twin and a classical model with the QELM's parameter count, writes each to disk in several
formats and prints what was measured: parameters, bytes, FLOPs per token, circuit executions and hardware
shots.

    python examples/compare_sizes.py                 # the published setting
    python examples/compare_sizes.py --n-qubits 6    # same, with 6-qubit circuits
    python examples/compare_sizes.py --plot sizes.png

The same numbers come from the command line: ``qelm compare --published``.
"""

import argparse

from qelm.compare import compare, markdown, plot_comparison, published_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-qubits", type=int, default=4, help="qubits per circuit (default 4)")
    parser.add_argument("--n-layers", type=int, default=1, help="transformer blocks (default 1)")
    parser.add_argument("--plot", help="also save a bar chart here (.png/.svg/.pdf; default: none)")
    args = parser.parse_args()

    config = published_config(n_qubits=args.n_qubits, n_layers=args.n_layers)
    result = compare(config, published=True)
    print(markdown(result))

    qelm, twin, matched = result["qelm"], result["twin"], result["matched"]
    print()
    print(f"QELM parameters: {qelm.total_parameters:,} ({qelm.total_circuit_weights:,} are circuit weights)")
    print(f"  twin:    {twin.total_parameters:,}  ({twin.total_parameters / qelm.total_parameters:.2f}x)")
    print(f"  matched: {matched.total_parameters:,}  ({matched.total_parameters / qelm.total_parameters:.2f}x)")
    if args.plot:
        print(f"wrote {plot_comparison(result, args.plot)}")


if __name__ == "__main__":
    main()
