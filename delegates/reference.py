"""PyTorch references for delta attention (the test oracles).

Definitions (per layer, per KV head; post-RoPE keys):
- k̂_{-1} = 0. Token 0 is stored dense: Δk_0 = r(k_0). For t > 0 and each element d, in fp32:
  δ = k_t[d] − k̂_{t−1}[d];  Δk_t[d] = r(δ) if |δ| > θ else 0;  k̂_t = k̂_{t−1} + Δk_t,
  where r(x) rounds clamp(x, ±65504) to fp16 (nearest even): ΔK is stored in fp16 and the
  reference key advances by exactly the stored value (error feedback: no drift).
- Approximate score q_i·k̂_j = Σ_{τ≤j} q_i·Δk_τ (sparse products + prefix sum over keys), except
  key 0 (the attention sink), whose score is always the exact q_i·k_0.
- Budget (optional, per_key values per key on average, dk_rows in the kernel's state): key t ≥ 1 may
  store at most b_t = min(D, D + t·per_key − s_t) non-zeros, s_t = the non-zeros keys 0..t−1 stored
  in its kv head (key 0 stores D). A key with more stores the b_t largest |δ| (ties: the lower
  element); the others are not stored and k̂ does not advance there (deferred to later keys).
- Exact band: a forward call with S new tokens uses band width W = w_decode if S == 1, else
  max(1, min(⌊γ·S⌋, w_max)). Query at absolute position i uses the exact key k_j when
  i − j < W (so its own key always), the approximation otherwise. A chunked prefill
  applies the rule per chunk; decode after a prefill uses w_decode. Key 0 is exact anyway.
- Then causal softmax with scale 1/√D and the product with V. GQA: query head h reads
  KV head h // (H / Hkv).
- Counting: S_m = zeros of ΔK / elements of ΔK (token 0 counts as all non-zero);
  MACs performed per query head for query i = Σ_{τ ≤ i−W} nnz(Δk_τ) + min(W, i+1)·D;
  dense causal MACs = (i+1)·D; S_c = 1 − performed / dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch


def band_width(seq_len: int, gamma: float, w_max: int, w_decode: int) -> int:
    if seq_len == 1:
        return w_decode
    return max(1, min(int(math.floor(gamma * seq_len)), w_max))


@dataclass
class SparsityCounts:
    """Counts from one or more calls; the kernel's counters have the same fields."""

    dk_zeros: int = 0
    dk_elements: int = 0
    macs_performed: int = 0
    macs_dense: int = 0

    def add(self, other: "SparsityCounts") -> None:
        self.dk_zeros += other.dk_zeros
        self.dk_elements += other.dk_elements
        self.macs_performed += other.macs_performed
        self.macs_dense += other.macs_dense

    @property
    def s_m(self) -> float:
        return self.dk_zeros / self.dk_elements if self.dk_elements else 0.0

    @property
    def s_c(self) -> float:
        return 1.0 - self.macs_performed / self.macs_dense if self.macs_dense else 0.0


F16_MAX = 65504.0


def delta_encode(k: torch.Tensor, k_hat: torch.Tensor, start: int, theta: float, per_key: Optional[int] = None,
                 stored: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token by token, in fp32 (as the kernel). k: [S, Hkv, D] at positions start..start+S-1; k_hat:
    [Hkv, D] (k̂_{start-1}); per_key: the budget (None: none); stored: [Hkv] non-zeros stored before
    `start` (needed with a budget). Returns (Δk [S, Hkv, D] fp32: the stored, fp16-rounded deltas; k̂
    after the last token, fp32)."""
    k = k.float()
    k_hat = k_hat.float().clone()
    dk = torch.zeros_like(k)
    D = k.shape[-1]
    stored = torch.zeros(k.shape[1], dtype=torch.long) if stored is None else stored.clone()
    for s in range(k.shape[0]):
        t = start + s
        d = k[s] - k_hat
        keep = torch.ones_like(d, dtype=torch.bool) if t == 0 else d.abs() > theta
        r = torch.where(keep, d.clamp(-F16_MAX, F16_MAX).half().float(), torch.zeros_like(d))
        if per_key is not None and t > 0:
            budget = (D + t * per_key - stored).clamp(max=D)                       # [Hkv]
            mag = torch.where(r != 0, d.abs(), torch.full_like(d, -1.0))          # candidates: stored non-zeros
            rank = torch.empty_like(mag, dtype=torch.long)
            order = torch.sort(mag, dim=-1, descending=True, stable=True).indices   # ties: the lower element
            rank.scatter_(-1, order, torch.arange(D).expand_as(order).contiguous())
            r = torch.where(rank < budget[:, None], r, torch.zeros_like(r))
        dk[s] = r
        k_hat = k_hat + r
        stored += D if t == 0 else (r != 0).sum(-1)
    return dk, k_hat


@dataclass
class DeltaState:
    """The caches the operator keeps per layer (all [T, Hkv, D] except k_hat [Hkv, D])."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    dk_cache: torch.Tensor
    k_hat: torch.Tensor
    nnz: torch.Tensor          # [T, Hkv] non-zeros of Δk per token and head
    prefill: SparsityCounts = field(default_factory=SparsityCounts)
    decode: SparsityCounts = field(default_factory=SparsityCounts)

    @classmethod
    def empty(cls, max_len: int, n_kv_heads: int, head_dim: int, dtype=torch.float64) -> "DeltaState":
        z = lambda: torch.zeros(max_len, n_kv_heads, head_dim, dtype=dtype)  # noqa: E731
        return cls(z(), z(), z(), torch.zeros(n_kv_heads, head_dim, dtype=torch.float32),   # k̂: fp32 as the kernel
                   torch.zeros(max_len, n_kv_heads, dtype=torch.long))


def delta_attention_step(state: DeltaState, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int,
                         theta: float, gamma: float, w_max: int, w_decode: int,
                         per_key: Optional[int] = None) -> torch.Tensor:
    """Slow oracle for one forward call. q: [S, H, D]; k, v: [S, Hkv, D]. Returns [S, H, D]."""
    S, H, D = q.shape
    hkv = k.shape[1]
    if start == 0:
        state.k_hat.zero_()
    dk, state.k_hat = delta_encode(k, state.k_hat, start, theta, per_key, state.nnz[:start].sum(0))
    end = start + S
    state.k_cache[start:end] = k
    state.v_cache[start:end] = v
    state.dk_cache[start:end] = dk
    state.nnz[start:end] = (dk != 0).sum(-1)
    if start == 0:
        state.nnz[0] = D
    W = band_width(S, gamma, w_max, w_decode)
    counts = SparsityCounts()
    counts.dk_elements = S * hkv * D
    counts.dk_zeros = counts.dk_elements - int(state.nnz[start:end].sum())
    out = torch.zeros(S, H, D, dtype=state.k_cache.dtype)
    group = H // hkv
    scale = 1.0 / math.sqrt(D)
    for s in range(S):
        i = start + s
        keys = torch.arange(i + 1)
        use_exact = (i - keys < W) | (keys == 0)                       # the band, and key 0: the exact sink
        for h in range(H):
            g = h // group
            qv = q[s, h].to(state.k_cache.dtype)
            approx = torch.cumsum((state.dk_cache[: i + 1, g] @ qv).double(), 0)   # prefix sum of q·Δk_τ
            exact = state.k_cache[: i + 1, g] @ qv
            scores = torch.where(use_exact, exact, approx.to(exact.dtype))
            n_approx = max(0, i + 1 - W)
            counts.macs_performed += int(state.nnz[:n_approx, g].sum()) + min(W, i + 1) * D
            counts.macs_dense += (i + 1) * D
            p = torch.softmax(scores * scale, dim=0)
            out[s, h] = p @ state.v_cache[: i + 1, g]
    (state.decode if S == 1 else state.prefill).add(counts)
    return out


def delta_attention_vectorized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: float, W: int,
                               ) -> Tuple[torch.Tensor, torch.Tensor, SparsityCounts]:
    """One call from position 0 over the whole sequence, vectorised over heads and queries.
    The delta encoding runs in fp32 with fp16 rounding (as the kernel, bit for bit), the rest in fp64.
    q: [n, H, D]; k, v: [n, Hkv, D]. Returns (out [n, H, D] fp64, Δk [n, Hkv, D], counts)."""
    n, H, D = q.shape
    hkv = k.shape[1]
    dk, _ = delta_encode(k, torch.zeros_like(k[0]), 0, theta)
    nnz = (dk != 0).sum(-1)
    nnz[0] = D
    q, k, v, dk = q.double(), k.double(), v.double(), dk.double()
    k_hat = torch.cumsum(dk, dim=0)
    rep = H // hkv
    kx = k.repeat_interleave(rep, dim=1).transpose(0, 1)        # [H, n, D]
    kh = k_hat.repeat_interleave(rep, dim=1).transpose(0, 1)
    vx = v.repeat_interleave(rep, dim=1).transpose(0, 1)
    qx = q.transpose(0, 1)
    exact = qx @ kx.transpose(1, 2)
    approx = qx @ kh.transpose(1, 2)
    approx[:, :, 0] = exact[:, :, 0]                             # the sink's score is exact
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    scores = torch.where(i - j < W, exact, approx) / math.sqrt(D)
    scores = scores.masked_fill(j > i, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vx
    counts = SparsityCounts(dk_elements=n * hkv * D)
    counts.dk_zeros = counts.dk_elements - int(nnz.sum())
    prefix = torch.cat([torch.zeros(1, hkv, dtype=torch.long), torch.cumsum(nnz, 0)])   # [n+1, hkv]
    pos = torch.arange(n)
    n_approx = (pos + 1 - W).clamp(min=0)
    performed = prefix[n_approx] + (torch.clamp(pos + 1, max=W) * D)[:, None]           # [n, hkv]
    counts.macs_performed = int(performed.sum()) * rep
    counts.macs_dense = int(((pos + 1) * D).sum()) * H
    return out.transpose(0, 1), dk, counts


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact causal attention in float64 (the oracle of deltallm::dense_attention, which gives the
    same output however the positions are split into calls). q [n, H, D]; k, v [n, Hkv, D]."""
    n, H, D = q.shape
    group = H // k.shape[1]
    kk, vv = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    s = torch.einsum("ihd,jhd->hij", q.double(), kk) / math.sqrt(D)
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("hij,jhd->ihd", s.softmax(-1), vv)


def run_calls(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunks: List[int], max_len: int, theta: float,
              gamma: float, w_max: int, w_decode: int, dtype=torch.float64,
              per_key: Optional[int] = None) -> Tuple[torch.Tensor, DeltaState]:
    """Run the oracle over consecutive calls of the given sizes (prefill chunks, then 1s for decode)."""
    state = DeltaState.empty(max_len, k.shape[1], k.shape[2], dtype)
    outs, pos = [], 0
    for n in chunks:
        outs.append(delta_attention_step(state, q[pos:pos + n], k[pos:pos + n], v[pos:pos + n], pos,
                                         theta, gamma, w_max, w_decode, per_key))
        pos += n
    return torch.cat(outs), state
