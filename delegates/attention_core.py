"""DeltaAttention: the attention core plugged into export/arch when attention.kind=delta;
ExactAttention: the dense core of attention.kind=dense with attention.dense_kernel=deltallm (the
same kernel with every key exact, plain K and V caches, each fp32, fp16, q8_0 or q4_0).

Its state lives in non-persistent buffers, which torch.export turns into mutable buffers of the
program (ExecuTorch's KV cache): the V cache (any format of delegates/formats.py), the compressed ΔK cache (a bitmask per
token and kv head, and per kv head a stream of packed fp16 non-zeros sized for dk_budget·head_dim
values per key), a ring of raw keys just long enough for the exact band of the longest chunk
(⌊γ·max_seq_len⌋ bounded by w_max, at least w_decode), the sink key and the reference key. See
delegates/csrc/deltaattn.h."""
from __future__ import annotations

import torch
from torch import nn

from . import formats, op  # noqa: F401  (op registers deltallm::delta_attention)
from .library import core


def ring_len(max_seq_len: int, gamma: float, w_max: int, w_decode: int) -> int:
    """Raw keys the exact band of any call of at most max_seq_len tokens reads: the C core's own
    dlm_ring_len, so the buffer and the kernel's check share one definition."""
    return int(core().dlm_ring_len(max_seq_len, gamma, w_max, w_decode))


class DeltaAttention(nn.Module):
    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, max_context_len: int, max_seq_len: int,
                 theta: float, gamma: float, w_max: int, w_decode: int, layer: int,
                 v_format: formats.Format = formats.Format.FP32, dk_budget: float = 1.0):
        super().__init__()
        self.theta, self.gamma, self.w_max, self.w_decode, self.layer = theta, gamma, w_max, w_decode, layer
        self.kv_shape = (max_context_len, n_kv_heads, head_dim)   # of the dense K and V caches it replaces
        ring = ring_len(max_seq_len, gamma, w_max, w_decode)
        rows = op.dk_rows(max_context_len, head_dim, dk_budget)
        for name, t in op.empty_state(max_context_len, ring, n_kv_heads, head_dim, v_format, rows).items():
            self.register_buffer(name, t, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start) -> torch.Tensor:
        return torch.ops.deltallm.delta_attention(
            q, k, v, self.k_ring, self.k_sink, self.v_cache, self.dk_mask, self.dk_val, self.dk_end, self.k_hat,
            self.k_ckpt, start, self.theta, self.gamma, self.w_max, self.w_decode, self.layer)


class ExactAttention(nn.Module):
    def __init__(self, n_kv_heads: int, head_dim: int, max_context_len: int,
                 v_format: formats.Format = formats.Format.FP32, k_format: formats.Format = formats.Format.FP32):
        super().__init__()
        self.kv_shape = (max_context_len, n_kv_heads, head_dim)
        self.register_buffer("k_cache", formats.empty_cache(k_format, max_context_len, n_kv_heads, head_dim),
                             persistent=False)
        self.register_buffer("v_cache", formats.empty_cache(v_format, max_context_len, n_kv_heads, head_dim),
                             persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start) -> torch.Tensor:
        return torch.ops.deltallm.dense_attention(q, k, v, self.k_cache, self.v_cache, start)
