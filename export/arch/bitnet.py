"""BitNet b1.58 weights: absmean ternarization of the decoder's linear layers."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn


@torch.no_grad()
def ternarize_(model: nn.Module) -> Dict[str, torch.Tensor]:
    """W <- round(clamp(W / s, -1, 1)) * s with s = mean|W| (per tensor), as BitNet b1.58.

    Weights that are already ternary (a packed checkpoint) are left unchanged.
    Returns fqn -> ternary fp32 weight, the reference for `quantize.ternary_report`.
    """
    out = {}
    for fqn, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and ".layers." in f".{fqn}":
            w = mod.weight
            s = w.abs().mean().clamp(min=1e-5)
            w.copy_(torch.round(torch.clamp(w / s, -1, 1)) * s)
            out[fqn] = w.detach().clone()
    return out
