"""The attention plug point: every layer's attention core is one replaceable module.

A core takes post-RoPE q [1,S,H,D], k/v [1,S,Hkv,D] and the start position, owns
its caches as (non-persistent) mutable buffers, and returns [1,S,H,D].
`attention.kind` chooses the core: dense (our kernel's exact path, or ExecuTorch's custom_sdpa with
`attention.dense_kernel=custom_sdpa`) or delta; the delegates' cores come from `delegates`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from .config import AttentionConfig, AttentionKind, CacheDtype, DenseKernel
from .errors import ConfigError


def load_llama_custom_ops() -> None:
    """Register llama::custom_sdpa / llama::update_cache (eager kernels + fake kernels)."""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


class DenseAttention(nn.Module):
    """Static KV cache updated by `llama::update_cache`, attention by `llama::custom_sdpa`."""

    def __init__(self, n_kv_heads: int, head_dim: int, max_context_len: int):
        super().__init__()
        load_llama_custom_ops()
        shape = (1, max_context_len, n_kv_heads, head_dim)
        self.kv_shape = shape[1:]
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: torch.SymInt) -> torch.Tensor:
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        return torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0, True)


def make_attention_core(cfg: AttentionConfig, layer: int, n_heads: int, n_kv_heads: int,
                        head_dim: int, max_context_len: int, max_seq_len: int) -> nn.Module:
    if cfg.kind == AttentionKind.DENSE and cfg.dense_kernel == DenseKernel.CUSTOM_SDPA:
        return DenseAttention(n_kv_heads, head_dim, max_context_len)
    field = "attention.kind" if cfg.kind == AttentionKind.DELTA else "attention.dense_kernel"
    what = "'delta'" if cfg.kind == AttentionKind.DELTA else "'deltallm'"
    try:
        from delegates.attention_core import DeltaAttention, ExactAttention  # noqa: F401
    except ImportError as e:
        raise ConfigError(field, f"{what} needs the delta-attention operator (delegates), which is not available: "
                                 f"{e}; run `python -m delegates.build`, or use attention.dense_kernel=custom_sdpa") from e
    if head_dim % 8:
        raise ConfigError(field, f"{what} needs head_dim to be a multiple of 8, got {head_dim}")
    from delegates.formats import Format
    for name, fmt in (("attention.k_cache", cfg.k_cache), ("attention.v_cache", cfg.v_cache)):
        if fmt in (CacheDtype.Q8_0, CacheDtype.Q4_0) and head_dim % 32:
            raise ConfigError(name, f"{fmt.value} stores blocks of 32 elements: head_dim must be a multiple of 32, "
                                    f"got {head_dim}")
    v_format, k_format = Format.parse(cfg.v_cache.value), Format.parse(cfg.k_cache.value)
    if cfg.kind == AttentionKind.DENSE:
        return ExactAttention(n_kv_heads, head_dim, max_context_len, v_format, k_format)
    if cfg.kind == AttentionKind.DELTA:
        theta = cfg.theta if cfg.theta_per_layer is None else cfg.theta_per_layer[layer]
        return DeltaAttention(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                              max_context_len=max_context_len, max_seq_len=max_seq_len, theta=theta, gamma=cfg.gamma,
                              w_max=cfg.w_max, w_decode=cfg.w_decode, layer=layer, v_format=v_format,
                              dk_budget=cfg.dk_budget)
    raise ConfigError("attention.kind", f"unsupported {cfg.kind!r}")  # pragma: no cover


def attention_state_report(model: nn.Module, max_context_len: int) -> dict:
    """The attention state the program carries (every attention core's buffers), against the fp32
    K and V caches of a dense program of the same shape at the same max context."""
    cores = [m for m in model.modules()
             if isinstance(m, DenseAttention) or type(m).__name__ in ("DeltaAttention", "ExactAttention")]
    total = sum(b.numel() * b.element_size() for c in cores for b in c.buffers())
    dense = sum(2 * 4 * math.prod(c.kv_shape) for c in cores)   # fp32 K and V caches [T, Hkv, D]
    return {"bytes": total, "bytes_per_token": total / max_context_len, "dense_fp32_kv_bytes": dense,
            "ratio_to_dense_fp32_kv": total / dense if dense else None, "max_context_len": max_context_len}


@contextmanager
def exact_attention(model: nn.Module):
    """Temporarily give every attention core of ours exact fp32 attention: a fresh dense core with
    fp32 K and V caches in place of each delta core and of each dense core whose caches round
    (fp16, q8_0, q4_0). The reference that shows how much the attention approximation moves the
    logits — the threshold, the ΔK stream's fp16 values and budget, the cache formats — for
    validation's tolerance."""
    from delegates.attention_core import ExactAttention

    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kind = type(child).__name__
            rounds = kind == "DeltaAttention" or (
                kind == "ExactAttention" and any(b.dtype != torch.float32 or b.shape[-1] != child.kv_shape[-1]
                                                 for b in (child.k_cache, child.v_cache)))
            if rounds:
                t, hkv, d = child.kv_shape
                setattr(parent, name, ExactAttention(hkv, d, t))
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
