"""Notes for a training that shows no progress bar (its stderr is a pipe or a log) and whose steps are slow
(a backend such as default.mixed takes minutes per step): after :data:`NOTE_AFTER` seconds without a
finished step, one line on stderr says which model is training, at which step, and how long its last step
took; then again at growing intervals. Fast runs print nothing."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SlowStepNotes", "NOTE_AFTER"]

NOTE_AFTER = 5.0  # seconds a step may run before it is noted
LONGEST_INTERVAL = 300.0  # notes come at most this far apart


class SlowStepNotes:
    """Fed the training callback's events (:meth:`seen`); a daemon thread writes the notes; :meth:`stop`
    ends it. ``label(name)`` says a model's name in words."""

    def __init__(self, label: Callable[[str], str], file=None, command: str = "train") -> None:
        self.label, self.file, self.command = label, file, command
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._model: str | None = None
        self._step = self._steps = 0
        self._since = self._last_seconds = 0.0
        self._interval = NOTE_AFTER

    def seen(self, event: str, name: str, info: dict[str, Any]) -> None:
        with self._lock:
            now = time.monotonic()
            if event == "start":
                self._model, self._step, self._steps, self._last_seconds = name, info["step"], info["steps"], 0.0
            elif event == "step":
                self._step, self._last_seconds = info["step"], float(info.get("step_seconds") or 0.0)
            elif event == "end":
                self._model = None
            self._since, self._interval = now, NOTE_AFTER
        if self._thread is None and event == "start":
            self._thread = threading.Thread(target=self._watch, name="qelm-slow-step-notes", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, NOTE_AFTER / 4)):
            with self._lock:
                if self._model is None or time.monotonic() - self._since < self._interval:
                    continue
                waited = time.monotonic() - self._since
                last = (f"its last step took {self._last_seconds:.1f} s" if self._last_seconds
                        else "its first step is still running")
                line = (f"qelm {self.command}: training the {self.label(self._model)} model, step {self._step + 1} of "
                        f"{self._steps}: {waited:.0f} s since the last finished step; {last} (a slow backend, e.g. "
                        f"default.mixed, takes minutes per step)")
                self._interval = min(self._interval * 2, LONGEST_INTERVAL)
            print(line, file=self.file or sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
