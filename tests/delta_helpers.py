"""Helpers for the delta-attention tests: inputs with realistic key drift, and the kernel call."""
from __future__ import annotations

import torch


def make_qkv(n: int, n_heads: int, n_kv_heads: int, head_dim: int, seed: int = 0):
    """Keys drift slowly from token to token (as post-RoPE keys of real models do)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n_heads, head_dim, generator=g)
    base = torch.randn(1, n_kv_heads, head_dim, generator=g) * 2
    k = base + torch.randn(n, n_kv_heads, head_dim, generator=g).cumsum(0) * 0.25
    v = torch.randn(n, n_kv_heads, head_dim, generator=g)
    return q, k, v


class KernelState:
    """Caches for one layer, as DeltaAttention holds them."""

    def __init__(self, max_len: int, n_kv_heads: int, head_dim: int):
        shape = (1, max_len, n_kv_heads, head_dim)
        self.k_cache, self.v_cache, self.dk_val = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
        self.dk_idx = torch.zeros(shape, dtype=torch.int32)
        self.dk_nnz = torch.zeros(shape[:3], dtype=torch.int32)
        self.k_hat = torch.zeros(1, n_kv_heads, head_dim)

    def call(self, q, k, v, start, theta, gamma, w_max, w_decode, layer=0):
        from delegates import op  # noqa: F401

        return torch.ops.deltallm.delta_attention(
            q[None], k[None], v[None], self.k_cache, self.v_cache, self.dk_idx, self.dk_val, self.dk_nnz,
            self.k_hat, start, theta, gamma, w_max, w_decode, layer)[0]


def run_kernel(q, k, v, chunks, max_len, theta, gamma, w_max, w_decode, layer=0):
    st = KernelState(max_len, k.shape[1], k.shape[2])
    outs, pos = [], 0
    for n in chunks:
        outs.append(st.call(q[pos:pos + n], k[pos:pos + n], v[pos:pos + n], pos, theta, gamma, w_max, w_decode,
                            layer))
        pos += n
    return torch.cat(outs), st


def nmse(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float(((got.double() - ref) ** 2).sum() / (ref ** 2).sum())
