"""Isolated runs: each measurement runs in a fresh process, so that one measurement's allocator caches,
compiled circuits and peak memory never leak into the next.

Starting Python and importing torch + PennyLane per measurement would cost seconds each, so one server
process (``python -m qelm.bench``) imports them once and forks a child per measurement. The server never
runs a torch operation itself, so its children start with no thread pool to inherit. Protocol: one JSON
job per line on the server's stdin (``spec``, ``result`` path, ``timeout``); one JSON line back on its
stdout when the child has finished or was killed at the timeout; the child writes its row to the
``result`` path. POSIX only (it needs ``os.fork``).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .worker import measure

__all__ = ["Server", "serve"]


def _child(spec: dict[str, Any], result_path: str) -> None:
    os.dup2(2, 1)  # anything a library prints must not reach the server's protocol stream
    try:
        row = measure(spec)
    except BaseException as e:  # a failing backend or config is a result, not a crash of the run
        row = {"status": "error", "error": f"{type(e).__name__}: {e}".strip()}
    atomic_write(result_path, json.dumps(row))


def serve() -> None:
    """The server loop (runs as ``python -m qelm.bench``); returns when its stdin closes."""
    # preloaded here, in the server only, and inherited by every child (qelm, torch and PennyLane come with
    # the worker module): the first optimizer imports it, ~1.5 s that is no part of a step
    import torch._dynamo  # noqa: F401

    gc.collect()
    gc.freeze()  # the imported objects never need collecting: children's gc (and its page copies) skip them
    out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(job["spec"], job["result"])
            finally:
                os._exit(0)
        out.write(json.dumps(_wait(pid, job["timeout"])) + "\n")
        out.flush()


def _wait(pid: int, timeout: float) -> dict[str, Any]:
    """Wait for child ``pid``; kill it at ``timeout`` seconds. Sleeps in ``select`` on a pidfd (Linux),
    so the server takes no CPU from the measurement; polls every 10 ms where pidfds do not exist."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return {"timed_out": False, "exit": os.waitstatus_to_exitcode(status)}
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timed_out": True}
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(left, 0.01))
    finally:
        if fd is not None:
            os.close(fd)


class Server:
    """Parent side of the fork server (POSIX: it needs ``os.fork``)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="qelm-bench-")
        self.stderr = open(Path(self.tmp.name) / "stderr.log", "w+b")
        self.count = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so the server imports this very qelm
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return subprocess.Popen([sys.executable, "-m", "qelm.bench"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True, bufsize=1)

    def measure(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.count += 1
        result = Path(self.tmp.name) / f"row{self.count}.json"
        start = time.perf_counter()
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None  # started with pipes
        try:
            self.proc.stdin.write(json.dumps({"spec": spec, "result": str(result), "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        reply = json.loads(line) if line.strip() else None
        if result.exists():
            row = json.loads(result.read_text())
        elif reply is not None and reply["timed_out"]:
            row = {"status": f"timeout: killed after {timeout:.0f} s", "error": None}
        else:
            code = reply["exit"] if reply else (self.proc.poll() if self.proc else None)
            row = {"status": "error", "error": f"the measurement process died (exit code {code}): "
                                               f"{self._last_stderr_line()}"}
        row["wall_s"] = time.perf_counter() - start  # server start (first call), fork, build, measure
        return row

    def _last_stderr_line(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        self.stderr.seek(0, os.SEEK_END)
        return lines[-1].strip() if lines else "no message"

    def close(self) -> None:
        if self.proc is not None:
            try:
                if self.proc.stdin is not None:  # started with a pipe: closing it tells the server to end
                    self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
