"""Imported by export.runtime: registers our kernels with the ExecuTorch runtime, if built."""
from __future__ import annotations

from .library import load_executorch_kernels


def load() -> None:
    try:
        load_executorch_kernels()
    except ImportError:
        pass  # not built: programs without delta attention still run
