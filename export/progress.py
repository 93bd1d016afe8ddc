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
