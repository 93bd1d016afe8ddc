"""Stage-by-stage progress on stderr, with timings kept for the manifest."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Dict, Optional, TextIO


class StageTimer:
    def __init__(self, stages, stream: Optional[TextIO] = None, quiet: bool = False):
        self.stages = list(stages)
        self.stream = stream  # None: sys.stderr at the time of writing (not at import)
        self.quiet = quiet
        self.timings_s: Dict[str, float] = {}

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream or sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = ""):
        idx = self.stages.index(name) + 1 if name in self.stages else 0
        tag = f"[{idx}/{len(self.stages)}] {name}"
        self.say(f"{tag}{': ' + detail if detail else ''} ...")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(time.perf_counter() - t0, 3)
        self.say(f"{tag} done in {self.timings_s[name]:.1f} s")


class ProgressBar:
    """Items done / total with rate and ETA on stderr: redrawn in place on a terminal, a line per
    10 % otherwise (logs stay short)."""

    def __init__(self, label: str, total: int, stream: Optional[TextIO] = None, quiet: bool = False):
        self.label, self.total, self.stream, self.quiet = label, max(total, 1), stream, quiet
        self.t0 = time.perf_counter()
        self.done = 0
        self._next_line = 0.1

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.quiet:
            return
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        text = f"  {self.label} {self.done}/{self.total} {elapsed:5.0f} s, eta {eta:4.0f} s"
        out = self._out()
        if out.isatty():
            filled = int(24 * frac)
            out.write(f"\r  {self.label} [{'#' * filled}{'.' * (24 - filled)}]{text[len(self.label) + 2:]}")
            if self.done >= self.total:
                out.write("\n")
            out.flush()
        elif frac >= self._next_line or self.done >= self.total:
            print(text, file=out, flush=True)
            while self._next_line <= frac:
                self._next_line += 0.1
