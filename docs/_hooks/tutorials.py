"""Tutorials executed at build time: a page of docs/tutorials/ names a script of ``examples/`` in a marker
line, ``<!-- example: train_tiny.py --steps 20 --out {out} -->``, and the build runs that script (all of them
side by side, one thread each) and puts in the marker's place the script's source, the command, what it
printed, and every figure it wrote (``{out}`` is a fresh folder of the run). A script that fails fails the
build, with its last lines of output. ``QELM_DOCS_SKIP_EXAMPLES=1`` leaves the scripts unrun, for a quick
preview of the prose (``make docs`` and the tests never set it)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MARKER = re.compile(r"^<!-- example: (\S+)(.*?) -->$", re.MULTILINE)
TIMEOUT_S = 300


@dataclass
class Run:
    script: str
    args: list[str]
    out: Path
    stdout: str = ""
    seconds: float = 0.0
    figures: tuple[str, ...] = ()


_runs: dict[tuple[str, str], Run] = {}  # (page, marker line) -> its run
_workdir: Path | None = None


def _execute(run: Run) -> Run:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONHASHSEED="0",
               COLUMNS="100")
    args = [a.replace("{out}", str(run.out)) for a in run.args]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(EXAMPLES / run.script), *args], cwd=run.out.parent, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    run.seconds = time.perf_counter() - start
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise PluginError(f"tutorial example {run.script} failed (exit {done.returncode}):\n{tail}")
    run.stdout = done.stdout.replace(str(run.out), "out")
    return run


def on_files(files: Files, config) -> Files:
    global _workdir
    _runs.clear()
    if os.environ.get("QELM_DOCS_SKIP_EXAMPLES"):  # a quick preview of the prose; the tests never set it
        return files
    _workdir = Path(tempfile.mkdtemp(prefix="qelm-docs-"))
    for file in list(files):
        if not (file.src_uri.startswith("tutorials/") and file.src_uri.endswith(".md")):
            continue
        for marker in MARKER.finditer(Path(file.abs_src_path).read_text(encoding="utf-8")):
            script, args = marker.group(1), shlex.split(marker.group(2))
            if not (EXAMPLES / script).is_file():
                raise PluginError(f"{file.src_uri} names examples/{script}, which does not exist")
            name = Path(file.src_uri).stem
            out = _workdir / name / "out"
            out.mkdir(parents=True)
            _runs[(file.src_uri, marker.group(0))] = Run(script, args, out)
    with ThreadPoolExecutor(max_workers=max(1, min(len(_runs), os.cpu_count() or 1))) as pool:
        list(pool.map(_execute, _runs.values()))
    for (page, _), run in _runs.items():
        figures = []
        for path in sorted(run.out.rglob("*")):
            if path.suffix in {".png", ".svg"}:
                uri = f"tutorials/{Path(page).stem}/{path.relative_to(run.out).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
                figures.append(uri)
        run.figures = tuple(figures)
    return files


def _render(run: Run, page: str) -> str:
    source = (EXAMPLES / run.script).read_text(encoding="utf-8").rstrip()
    command = " ".join(["python", f"examples/{run.script}", *(a.replace("{out}", "out") for a in run.args)])
    parts = [f'```python title="examples/{run.script}"', source, "```", "",
             f"Run when this site was built, as `{command}` ({run.seconds:.0f} s on one thread). It printed:", "",
             "```text", run.stdout.rstrip() or "(nothing)", "```", ""]
    here = Path(page).parent
    for uri in run.figures:
        rel = Path(uri).relative_to(here).as_posix()
        parts += [f"![{Path(uri).name}]({rel})", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(marker: re.Match) -> str:
        if (page.file.src_uri, marker.group(0)) not in _runs:
            return f"*(examples/{marker.group(1)} was not run: QELM_DOCS_SKIP_EXAMPLES is set)*"
        return _render(_runs[(page.file.src_uri, marker.group(0))], page.file.src_uri)

    return MARKER.sub(replace, markdown)


def on_post_build(config) -> None:
    if _workdir is not None:
        shutil.rmtree(_workdir, ignore_errors=True)
