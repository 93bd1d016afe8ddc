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
    """One layer's state, as DeltaAttention holds it: the ring sized for calls of at most
    max_seq_len tokens (default: max_len), as an export sizes it."""

    def __init__(self, max_len: int, n_kv_heads: int, head_dim: int, max_seq_len: int = 0, gamma: float = 0.1,
                 w_max: int = 1 << 20, w_decode: int = 4, v_dtype=torch.float32, stream_rows: int = 0):
        from delegates.attention_core import ring_len
        from delegates.op import empty_state

        self.ring = ring_len(max_seq_len or max_len, gamma, w_max, w_decode)
        self.state = empty_state(max_len, self.ring, n_kv_heads, head_dim, v_dtype, stream_rows)
        for name, t in self.state.items():
            setattr(self, name, t)

    def tensors(self):
        from delegates.op import STATE

        return [self.state[name] for name in STATE]

    def call(self, q, k, v, start, theta, gamma, w_max, w_decode, layer=0):
        return torch.ops.deltallm.delta_attention(q[None], k[None], v[None], *self.tensors(), start, theta, gamma,
                                                  w_max, w_decode, layer)[0]


def run_kernel(q, k, v, chunks, max_len, theta, gamma, w_max, w_decode, layer=0, v_dtype=torch.float32,
               stream_rows=0):
    from delegates import op  # noqa: F401

    st = KernelState(max_len, k.shape[1], k.shape[2], max(chunks), gamma, w_max, w_decode, v_dtype, stream_rows)
    outs, pos = [], 0
    for n in chunks:
        outs.append(st.call(q[pos:pos + n], k[pos:pos + n], v[pos:pos + n], pos, theta, gamma, w_max, w_decode,
                            layer))
        pos += n
    return torch.cat(outs), st


def nmse(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float(((got.double() - ref) ** 2).sum() / (ref ** 2).sum())
