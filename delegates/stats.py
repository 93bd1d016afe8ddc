"""Sparsity counters kept by the kernel (per layer; prefill and decode separately).

They are process-wide: every call of the kernel in this process (eager or ExecuTorch runtime)
adds to them. Native callers use the same counters through the C API in csrc/deltaattn.h
(dlm_stats_read / dlm_stats_reset / dlm_stats_num_layers)."""
from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass
from typing import Dict, List

from .library import Counts, core
from .reference import SparsityCounts

PHASES = {"prefill": 0, "decode": 1}


@dataclass
class LayerCounts(SparsityCounts):
    """The kernel's counters of one layer and phase (S_m / S_c as in the reference)."""

    layer: int = 0
    phase: str = ""
    calls: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "s_m": self.s_m, "s_c": self.s_c}


def reset() -> None:
    core().dlm_stats_reset()


def read(phase: str) -> List[LayerCounts]:
    lib, out = core(), []
    for layer in range(lib.dlm_stats_num_layers()):
        c = Counts()
        if lib.dlm_stats_read(layer, PHASES[phase], ctypes.byref(c)) != 0:
            raise RuntimeError(f"cannot read counters of layer {layer}")
        out.append(LayerCounts(c.dk_zeros, c.dk_elements, c.macs_performed, c.macs_dense, layer, phase, c.calls))
    return out


def total(layers: List[LayerCounts]) -> Dict[str, float]:
    z = sum(x.dk_zeros for x in layers)
    e = sum(x.dk_elements for x in layers)
    p = sum(x.macs_performed for x in layers)
    d = sum(x.macs_dense for x in layers)
    return {"s_m": z / e if e else 0.0, "s_c": 1 - p / d if d else 0.0, "macs_performed": p, "macs_dense": d}


def summary() -> Dict[str, object]:
    """Per-layer and overall S_m / S_c for prefill, decode and both."""
    pre, dec = read("prefill"), read("decode")
    return {"prefill": {"total": total(pre), "layers": [x.to_dict() for x in pre]},
            "decode": {"total": total(dec), "layers": [x.to_dict() for x in dec]},
            "all": total(pre + dec)}
