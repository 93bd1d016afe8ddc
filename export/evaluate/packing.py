"""Packed scoring for the eager model: several independent sequences share one pass through
the linear layers (weights are read once per pack, not once per sequence), while RoPE uses
each token's own position and every attention core runs each sequence separately from
position 0, exactly as an unpacked prefill. The kernel's sparsity counters see the same
calls as without packing."""
from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence

import torch
from torch import nn


class _SegmentCore(nn.Module):
    """Runs the wrapped attention core once per sequence of the pack (start position 0)."""

    def __init__(self, core: nn.Module, lengths: Sequence[int]):
        super().__init__()
        self.core, self.lengths = core, list(lengths)

    def forward(self, q, k, v, start):
        outs, pos = [], 0
        for n in self.lengths:
            outs.append(self.core(q[:, pos:pos + n], k[:, pos:pos + n], v[:, pos:pos + n], 0))
            pos += n
        return torch.cat(outs, dim=1)


@contextlib.contextmanager
def _segmented(model, lengths: Sequence[int]):
    layers = model.model.layers
    cores = [layer.self_attn.core for layer in layers]
    for layer, core in zip(layers, cores):
        layer.self_attn.core = _SegmentCore(core, lengths)
    try:
        yield
    finally:
        for layer, core in zip(layers, cores):
            layer.self_attn.core = core


def packed_rope(model, lengths: Sequence[int]):
    positions = torch.cat([torch.arange(n) for n in lengths])
    d = model.args.head_dim
    return (model.rope_cos[positions].view(1, -1, 1, d), model.rope_sin[positions].view(1, -1, 1, d),
            model.rope_rot)


def packed_layers(model, lengths: Sequence[int], h: torch.Tensor, first: int = 0,
                  inputs: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
    """Run layers first.. on the packed residual stream h [1, Σ len, dim]; final-norm output.
    With `inputs`, every layer's input is appended to it."""
    if max(lengths) > model.max_context_len:
        raise ValueError(f"a sequence of {max(lengths)} tokens exceeds the context of {model.max_context_len}")
    rope = packed_rope(model, lengths)
    with _segmented(model, lengths):
        for layer in model.model.layers[first:]:
            if inputs is not None:
                inputs.append(h)
            h = layer(h, rope, 0)
    return model.model.norm(h)


def packed_hidden(model, seqs: List[List[int]]) -> torch.Tensor:
    """Final-norm hidden states [Σ len, dim] of independent sequences, each from position 0."""
    tokens = torch.tensor([[t for s in seqs for t in s]], dtype=torch.long)
    return packed_layers(model, [len(s) for s in seqs], model.model.embed_tokens(tokens))[0]
