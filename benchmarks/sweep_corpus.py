"""Write the second corpus of the README's sweep: real English prose that every CPython installation
ships, no download. It is the text of the Python Language Reference topics behind ``help()``
(``pydoc_data.topics``), joined in sorted topic order, cut to the first ``--chars`` characters. The
text differs between Python versions: the sweep records its sha256 (and the run used CPython 3.11.7).

    python benchmarks/sweep_corpus.py runs/pydoc.txt
    qelm sweep --space examples/sweep.toml --data runs/pydoc.txt --out runs/sweep-pydoc
"""

import argparse
import hashlib
import sys
from pathlib import Path

import pydoc_data.topics


def corpus(chars: int) -> str:
    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[name] for name in sorted(topics))[:chars]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="text file to write")
    parser.add_argument("--chars", type=int, default=60_000, help="characters to keep (default 60,000)")
    args = parser.parse_args()
    text = corpus(args.chars)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text):,} characters of pydoc_data.topics (Python {sys.version.split()[0]}), "
          f"sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}...")


if __name__ == "__main__":
    main()
