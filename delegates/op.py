"""The delta-attention op: one schema (functional + .out), a fake kernel for torch.export and
a CPU kernel that calls the same C core as the ExecuTorch runtime (through ctypes).

Tensors (batch 1): q [1,S,H,D]; k, v [1,S,Hkv,D]; k_cache, v_cache, dk_val [1,T,Hkv,D] f32;
dk_idx [1,T,Hkv,D] i32; dk_nnz [1,T,Hkv] i32; k_hat [1,Hkv,D] f32. Returns [1,S,H,D].
"""
from __future__ import annotations

import ctypes

import torch

from .library import AttnArgs, core

ARGS = ("Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor(c!) dk_idx, "
        "Tensor(d!) dk_val, Tensor(e!) dk_nnz, Tensor(f!) k_hat, SymInt start_pos, float theta, float gamma, "
        "int w_max, int w_decode, int layer")

lib = torch.library.Library("deltallm", "DEF")
lib.define(f"delta_attention({ARGS}) -> Tensor")
lib.define(f"delta_attention.out({ARGS}, *, Tensor(g!) out) -> Tensor(g!)")


def _ptr(t: torch.Tensor, dtype: torch.dtype, name: str) -> int:
    if t.dtype != dtype:
        raise RuntimeError(f"deltallm::delta_attention: {name} must be {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise RuntimeError(f"deltallm::delta_attention: {name} must be contiguous")
    return t.data_ptr()


def _check_ranks(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise RuntimeError("deltallm::delta_attention: q, k and v must have rank 4 [1, S, heads, head_dim]")
    if any(t.dim() != 4 for t in (k_cache, v_cache, dk_idx, dk_val)) or dk_nnz.dim() != 3 or k_hat.dim() != 3:
        raise RuntimeError("deltallm::delta_attention: caches must have rank 4, dk_nnz and k_hat rank 3")
    if q.shape[0] != 1:
        raise RuntimeError("deltallm::delta_attention: batch size must be 1")
    D, hkv, T = q.shape[3], k.shape[2], k_cache.shape[1]
    if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
        raise RuntimeError("deltallm::delta_attention: q, k and v must have the same sequence length")
    if any(t.shape[-1] != D for t in (k, v, k_cache, v_cache, dk_idx, dk_val, k_hat)):
        raise RuntimeError("deltallm::delta_attention: head_dim mismatch between q, k, v and the caches")
    if any(t.shape[2] != hkv for t in (v, k_cache, v_cache, dk_idx, dk_val, dk_nnz)) or k_hat.shape[1] != hkv:
        raise RuntimeError("deltallm::delta_attention: kv head count mismatch between k, v and the caches")
    if any(t.shape[1] != T for t in (v_cache, dk_idx, dk_val, dk_nnz)):
        raise RuntimeError("deltallm::delta_attention: caches must have the same max context length")


def _run(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma, w_max, w_decode,
         layer, out):
    _check_ranks(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    f32, i32 = torch.float32, torch.int32
    a = AttnArgs(
        q=_ptr(q, f32, "q"), k=_ptr(k, f32, "k"), v=_ptr(v, f32, "v"), k_cache=_ptr(k_cache, f32, "k_cache"),
        v_cache=_ptr(v_cache, f32, "v_cache"), dk_idx=_ptr(dk_idx, i32, "dk_idx"), dk_val=_ptr(dk_val, f32, "dk_val"),
        dk_nnz=_ptr(dk_nnz, i32, "dk_nnz"), k_hat=_ptr(k_hat, f32, "k_hat"), out=_ptr(out, f32, "out"),
        seq_len=q.shape[1], n_heads=q.shape[2], n_kv_heads=k.shape[2], head_dim=q.shape[3],
        max_len=k_cache.shape[1], start_pos=int(start_pos), theta=float(theta), gamma=float(gamma),
        w_max=int(w_max), w_decode=int(w_decode), layer=int(layer), parallel=None, pool_ctx=None)
    err = ctypes.create_string_buffer(256)
    if core().dlm_delta_attention_f32(ctypes.byref(a), err, len(err)) != 0:
        raise RuntimeError(err.value.decode())
    return out


@torch.library.impl(lib, "delta_attention", "CPU")
def _delta_attention_cpu(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma,
                         w_max, w_decode, layer):
    out = torch.empty(q.shape, dtype=torch.float32)
    return _run(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma, w_max,
                w_decode, layer, out)


@torch.library.impl(lib, "delta_attention.out", "CPU")
def _delta_attention_out_cpu(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma,
                             w_max, w_decode, layer, *, out):
    out.resize_(q.shape)
    return _run(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma, w_max,
                w_decode, layer, out)


@torch.library.register_fake("deltallm::delta_attention")
def _delta_attention_fake(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma,
                          w_max, w_decode, layer):
    torch._check(start_pos >= 0)
    torch._check(start_pos + q.shape[1] <= k_cache.shape[1])
    return torch.empty_like(q)


@torch.library.register_fake("deltallm::delta_attention.out")
def _delta_attention_out_fake(q, k, v, k_cache, v_cache, dk_idx, dk_val, dk_nnz, k_hat, start_pos, theta, gamma,
                              w_max, w_decode, layer, *, out):
    return out
