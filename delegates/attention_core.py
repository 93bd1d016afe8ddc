"""DeltaAttention: the attention core plugged into export/arch when attention.kind=delta.

Its state (raw K and V caches for the exact band, the compressed ΔK cache and the per-head
reference key) lives in non-persistent buffers, which torch.export turns into mutable
buffers of the program, beside the V cache, as ExecuTorch's KV cache."""
from __future__ import annotations

import torch
from torch import nn

from . import op  # noqa: F401  (registers deltallm::delta_attention)


class DeltaAttention(nn.Module):
    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, max_context_len: int, theta: float,
                 gamma: float, w_max: int, w_decode: int, layer: int):
        super().__init__()
        self.theta, self.gamma, self.w_max, self.w_decode, self.layer = theta, gamma, w_max, w_decode, layer
        cache = (1, max_context_len, n_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(cache), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache), persistent=False)
        self.register_buffer("dk_idx", torch.zeros(cache, dtype=torch.int32), persistent=False)
        self.register_buffer("dk_val", torch.zeros(cache), persistent=False)
        self.register_buffer("dk_nnz", torch.zeros(cache[:3], dtype=torch.int32), persistent=False)
        self.register_buffer("k_hat", torch.zeros(1, n_kv_heads, head_dim), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start) -> torch.Tensor:
        return torch.ops.deltallm.delta_attention(
            q, k, v, self.k_cache, self.v_cache, self.dk_idx, self.dk_val, self.dk_nnz, self.k_hat, start,
            self.theta, self.gamma, self.w_max, self.w_decode, self.layer)
