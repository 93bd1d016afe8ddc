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
    """Runs an attention core once per sequence of the pack: segment i goes to cores[i] (its
    own caches) at starts[i]."""

    def __init__(self, cores: Sequence[nn.Module], lengths: Sequence[int], starts: Sequence[int]):
        super().__init__()
        self.cores, self.lengths, self.starts = list(cores), list(lengths), list(starts)

    def forward(self, q, k, v, start):
        outs, pos = [], 0
        for core, n, s in zip(self.cores, self.lengths, self.starts):
            outs.append(core(q[:, pos:pos + n], k[:, pos:pos + n], v[:, pos:pos + n], s))
            pos += n
        return torch.cat(outs, dim=1)


@contextlib.contextmanager
def _segmented(model, lengths: Sequence[int], starts: Optional[Sequence[int]] = None,
               slot_cores: Optional[List[List[nn.Module]]] = None):
    """Segment i of every layer runs on slot_cores[layer][i] (default: the layer's own core) from
    starts[i] (default 0)."""
    layers = model.model.layers
    cores = [layer.self_attn.core for layer in layers]
    starts = list(starts) if starts is not None else [0] * len(lengths)
    for li, (layer, core) in enumerate(zip(layers, cores)):
        per_seg = slot_cores[li] if slot_cores is not None else [core] * len(lengths)
        layer.self_attn.core = _SegmentCore(per_seg, lengths, starts)
    try:
        yield
    finally:
        for layer, core in zip(layers, cores):
            layer.self_attn.core = core


def packed_rope(model, lengths: Sequence[int], starts: Optional[Sequence[int]] = None):
    starts = list(starts) if starts is not None else [0] * len(lengths)
    positions = torch.cat([torch.arange(s, s + n) for s, n in zip(starts, lengths)])
    d = model.args.head_dim
    return (model.rope_cos[positions].view(1, -1, 1, d), model.rope_sin[positions].view(1, -1, 1, d),
            model.rope_rot)


def packed_layers(model, lengths: Sequence[int], h: torch.Tensor, first: int = 0,
                  inputs: Optional[List[torch.Tensor]] = None, starts: Optional[Sequence[int]] = None,
                  slot_cores: Optional[List[List[nn.Module]]] = None) -> torch.Tensor:
    """Run layers first.. on the packed residual stream h [1, Σ len, dim]; final-norm output.
    With `inputs`, every layer's input is appended to it. `starts` / `slot_cores` continue
    sequences whose caches live in per-slot copies of the cores (batched generation)."""
    ends = [s + n for s, n in zip(starts or [0] * len(lengths), lengths)]
    if max(ends) > model.max_context_len:
        raise ValueError(f"a sequence of {max(ends)} tokens exceeds the context of {model.max_context_len}")
    rope = packed_rope(model, lengths, starts)
    with _segmented(model, lengths, starts, slot_cores):
        for layer in model.model.layers[first:]:
            if inputs is not None:
                inputs.append(h)
            h = layer(h, rope, 0)
    return model.model.norm(h)


def packed_hidden(model, seqs: List[List[int]]) -> torch.Tensor:
    """Final-norm hidden states [Σ len, dim] of independent sequences, each from position 0."""
    tokens = torch.tensor([[t for s in seqs for t in s]], dtype=torch.long)
    return packed_layers(model, [len(s) for s in seqs], model.model.embed_tokens(tokens))[0]


def slot_cores(model, slots: int) -> List[List[nn.Module]]:
    """Per layer, `slots` attention cores with their own caches (the layer's own core first)."""
    import copy

    return [[layer.self_attn.core] + [copy.deepcopy(layer.self_attn.core) for _ in range(slots - 1)]
            for layer in model.model.layers]


def packed_greedy(model, prompts: List[List[int]], max_new: int, eos_ids: Sequence[int], stop,
                  cores: List[List[nn.Module]]) -> List[List[int]]:
    """Greedy generation for len(prompts) <= slots sequences at once: one packed prefill, then
    packed decode steps (one token per live sequence, each on its own cores and position)."""
    n = len(prompts)
    slots = [[c[i] for i in range(n)] for c in cores]
    lengths = [len(p) for p in prompts]
    tokens = torch.tensor([[t for p in prompts for t in p]])
    h = packed_layers(model, lengths, model.model.embed_tokens(tokens), slot_cores=slots)[0]
    ends = torch.tensor(lengths).cumsum(0) - 1
    nxt = model.lm_head(h[ends]).argmax(-1).tolist()
    out: List[List[int]] = [[] for _ in prompts]
    pos = list(lengths)
    live = list(range(n))
    while live:
        still = []
        for i in live:
            if nxt[i] in eos_ids:
                continue
            out[i].append(nxt[i])
            if len(out[i]) < max_new and not stop(out[i]) and pos[i] + 1 <= model.max_context_len:
                still.append(i)
        live = still
        if not live:
            break
        step = torch.tensor([[nxt[i] for i in live]])
        h = packed_layers(model, [1] * len(live), model.model.embed_tokens(step), starts=[pos[i] for i in live],
                          slot_cores=[[c[i] for i in live] for c in cores])[0]
        for j, t in enumerate(model.lm_head(h).argmax(-1).tolist()):
            nxt[live[j]] = t
            pos[live[j]] += 1
    return out
