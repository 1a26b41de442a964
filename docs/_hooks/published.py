"""Pages whose source lives elsewhere in the repository, published as they are: the circuit gallery
(``circuits/``, written by ``make gallery`` and checked by tests/test_gallery.py), and the benchmarks'
method (``benchmarks/README.md``) with the result files that the measurement pages cite."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "circuits"
BENCHMARKS = ROOT / "benchmarks"
#: links of benchmarks/README.md that point outside benchmarks/, and where they point on the site
BENCHMARK_LINKS = {"](../README.md#noise-and-error-mitigation)": "](noise.md)"}


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "gallery/index.md", content=(GALLERY / "README.md").read_text(encoding="utf-8")))
    for path in sorted(GALLERY.iterdir()):
        if path.suffix in {".png", ".txt", ".qasm", ".json"}:
            files.append(File.generated(config, f"gallery/{path.name}", abs_src_path=str(path)))
    method = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    for link, target in BENCHMARK_LINKS.items():
        method = method.replace(link, target)
    files.append(File.generated(config, "measurements/benchmarks.md", content=method))
    results = BENCHMARKS / "results"
    for path in sorted(results.rglob("*")):
        if path.is_file():
            uri = f"measurements/results/{path.relative_to(results).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
        elif path.is_dir():  # a folder of results is a page that lists its files
            entries = "\n".join(f"- [{p.name}]({p.name})" for p in sorted(path.iterdir()) if p.is_file())
            title = f"# benchmarks/results/{path.relative_to(results).as_posix()}"
            files.append(File.generated(config, f"measurements/results/{path.relative_to(results).as_posix()}/index.md",
                                        content=f"{title}\n\nThe files of these runs, as committed.\n\n{entries}\n"))
    return files
