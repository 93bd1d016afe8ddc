"""Bench harnesses in C++, built once per content: the executable's name carries a hash of its
sources, headers and flags, under ~/.cache/deltallm/bench (or $DELTALLM_CACHE/bench)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence


def cached_exe(name: str, sources: Sequence[Path], headers: Sequence[Path], flags: Sequence[str]) -> Path:
    """g++ -std=c++17 -O3 sources + flags → the cached executable (built if missing: temp file, then rename)."""
    deps = [*sources, *headers]
    tag = hashlib.sha256(b"".join(p.read_bytes() for p in deps) + " ".join(flags).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("DELTALLM_CACHE") or Path.home() / ".cache" / "deltallm") / "bench"
    exe = cache / f"{name}-{tag}"
    if not exe.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"building {exe.name} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            out = Path(tmp) / exe.name
            subprocess.run(["g++", "-std=c++17", "-O3", "-DNDEBUG", *map(str, sources), *flags, "-o", str(out)],
                           check=True)
            out.replace(exe)
    return exe
