"""The delta-attention op: one schema (functional + .out), a fake kernel for torch.export and
a CPU kernel that calls the same C core as the ExecuTorch runtime (through ctypes).

Tensors (batch 1, T = max context, R = ring length, see delegates/csrc/deltaattn.h):
q [1,S,H,D]; k, v [1,S,Hkv,D]; the state: k_ring [1,R,Hkv,D] f32 (raw keys of the last R positions,
for the exact band), k_sink [1,Hkv,D] f32 (key 0), v_cache [1,Hkv,T,row] (head-major) in any cache format (delegates/formats.py:
fp32, fp16, q8_0, q4_0), dk_mask [1,T,Hkv,D/8]
uint8 (ΔK non-zero bitmask), dk_val [1,Hkv,P,D] float16 (per kv head one stream: the ΔK non-zeros
packed key after key, read sequentially; P = T rows hold every non-zero, fewer set a budget of
values per key, see dk_rows), dk_end [1,T,Hkv] int32 (where key t's non-zeros end in its
head's stream), k_hat [1,Hkv,D] f32, k_ckpt [1,C,Hkv,D] f32 (k̂ every DLM_CKPT_STRIDE positions,
where a split of the keys starts; C = dlm_ckpt_len(T)). Returns [1,S,H,D].

deltallm::dense_attention is the same kernel with every key exact (no ΔK state): q, k, v as above,
k_cache and v_cache [1,Hkv,T,row] (head-major), each in any cache format (fp16 rounded to nearest even and clamped to
±65504, q8_0 / q4_0 quantized, as stored; a K cache in any format but fp32 stores this call's keys before
the scores, and a quantized one is read with q8-quantized queries), updated at [start_pos, start_pos + S).
"""
from __future__ import annotations

import ctypes

import torch

from . import formats
from .library import AttnArgs, DenseArgs, core

ARGS = ("Tensor q, Tensor k, Tensor v, Tensor(a!) k_ring, Tensor(b!) k_sink, Tensor(c!) v_cache, "
        "Tensor(d!) dk_mask, Tensor(e!) dk_val, Tensor(f!) dk_end, Tensor(g!) k_hat, Tensor(h!) k_ckpt, SymInt start_pos, "
        "float theta, float gamma, int w_max, int w_decode, int layer")

lib = torch.library.Library("deltallm", "DEF")
lib.define(f"delta_attention({ARGS}) -> Tensor")
lib.define(f"delta_attention.out({ARGS}, *, Tensor(i!) out) -> Tensor(i!)")
DENSE_ARGS = "Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, SymInt start_pos"
lib.define(f"dense_attention({DENSE_ARGS}) -> Tensor")
lib.define(f"dense_attention.out({DENSE_ARGS}, *, Tensor(c!) out) -> Tensor(c!)")

STATE = ("k_ring", "k_sink", "v_cache", "dk_mask", "dk_val", "dk_end", "k_hat", "k_ckpt")
# Not indexed by position (deltaattn.h DLM_RUNNING_STATE_NAMES): what a runner that rewinds restores.
RUNNING_STATE = ("k_hat", "k_ring")
DTYPES = {"k_ring": torch.float32, "k_sink": torch.float32, "v_cache": torch.float32, "dk_mask": torch.uint8,
          "dk_val": torch.float16, "dk_end": torch.int32, "k_hat": torch.float32, "k_ckpt": torch.float32}


def dk_rows(max_len: int, head_dim: int, budget: float = 1.0) -> int:
    """Rows of head_dim values per kv head the ΔK value stream needs when a key stores budget·head_dim
    values on average (at least 1; budget 1: every non-zero, max_len rows). The C core's dlm_dk_rows:
    a key may store more than that average while earlier keys left some unused (deltaattn.h)."""
    per_key = max(1, min(head_dim, int(budget * head_dim)))
    return int(core().dlm_dk_rows(max_len, head_dim, per_key))


def state_shapes(max_len: int, ring_len: int, n_kv_heads: int, head_dim: int, stream_rows: int = 0) -> dict:
    """The state tensors' shapes (batch 1), by name; stream_rows: dk_val's rows (0: max_len)."""
    t = (1, max_len, n_kv_heads)
    return {"k_ring": (1, ring_len, n_kv_heads, head_dim), "k_sink": (1, n_kv_heads, head_dim),
            "v_cache": (1, n_kv_heads, max_len, head_dim), "dk_mask": t + (head_dim // 8,),
            "dk_val": (1, n_kv_heads, stream_rows or max_len, head_dim), "dk_end": t,
            "k_hat": (1, n_kv_heads, head_dim),
            "k_ckpt": (1, int(core().dlm_ckpt_len(max_len)), n_kv_heads, head_dim)}


def empty_state(max_len: int, ring_len: int, n_kv_heads: int, head_dim: int,
                v_format=formats.Format.FP32, stream_rows: int = 0) -> dict:
    """Zeroed state tensors by name; v_format: the V cache's format (formats.as_format: a Format, its
    name, or torch.float32 / float16)."""
    v_format = formats.as_format(v_format)
    shapes = state_shapes(max_len, ring_len, n_kv_heads, head_dim, stream_rows)
    state = {n: torch.zeros(shape, dtype=DTYPES[n]) for n, shape in shapes.items() if n != "v_cache"}
    state["v_cache"] = formats.empty_cache(v_format, max_len, n_kv_heads, head_dim)
    return {n: state[n] for n in shapes}


def _ptr(t: torch.Tensor, name: str) -> int:
    dtype = DTYPES.get(name, torch.float32)
    if name == "v_cache":
        dtype = t.dtype   # any cache format: checked by _cache_format
    if t.dtype != dtype:
        raise RuntimeError(f"deltallm::delta_attention: {name} must be {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise RuntimeError(f"deltallm::delta_attention: {name} must be contiguous")
    return t.data_ptr()


def _check_shapes(q, k, v, state: dict):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise RuntimeError("deltallm::delta_attention: q, k and v must have rank 4 [1, S, heads, head_dim]")
    if q.shape[0] != 1:
        raise RuntimeError("deltallm::delta_attention: batch size must be 1")
    if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
        raise RuntimeError("deltallm::delta_attention: q, k and v must have the same sequence length")
    D, hkv = q.shape[3], k.shape[2]
    if D % 8:
        raise RuntimeError(f"deltallm::delta_attention: head_dim must be a multiple of 8, got {D}")
    if k.shape[3] != D or v.shape[3] != D or tuple(v.shape[2:]) != (hkv, D):
        raise RuntimeError("deltallm::delta_attention: head_dim or kv head mismatch between q, k and v")
    if state["v_cache"].dim() != 4 or state["k_ring"].dim() != 4:
        raise RuntimeError("deltallm::delta_attention: v_cache and k_ring must have rank 4")
    rows = state["dk_val"].shape[2] if state["dk_val"].dim() == 4 else 0   # the core checks the rows
    want = state_shapes(state["v_cache"].shape[2], state["k_ring"].shape[1], hkv, D, rows)
    want["v_cache"] = want["v_cache"][:3] + (state["v_cache"].shape[3],)   # its row: the format's
    _cache_format("deltallm::delta_attention", "v_cache", state["v_cache"], D)
    for name, shape in want.items():
        if tuple(state[name].shape) != shape:
            shown = str(list(shape)) if name != "dk_val" else f"[1, {hkv}, P, {D}] (P rows: dk_rows)"
            raise RuntimeError(f"deltallm::delta_attention: {name} must have shape {shown} for these q/k/v "
                               f"and caches, got {list(state[name].shape)}")


def _cache_format(op: str, name: str, t: torch.Tensor, head_dim: int) -> formats.Format:
    try:
        return formats.format_of(t, head_dim)
    except ValueError as e:
        raise RuntimeError(f"{op}: {name} {e}") from None


def _run(q, k, v, state: dict, start_pos, theta, gamma, w_max, w_decode, layer, out):
    _check_shapes(q, k, v, state)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    a = AttnArgs(
        q=_ptr(q, "q"), k=_ptr(k, "k"), v=_ptr(v, "v"), out=_ptr(out, "out"),
        **{n: _ptr(state[n], n) for n in STATE},
        seq_len=q.shape[1], n_heads=q.shape[2], n_kv_heads=k.shape[2], head_dim=q.shape[3],
        max_len=state["v_cache"].shape[2], ring_len=state["k_ring"].shape[1],
        v_format=int(formats.format_of(state["v_cache"], q.shape[3])), start_pos=int(start_pos),
        theta=float(theta), gamma=float(gamma), w_max=int(w_max), w_decode=int(w_decode), layer=int(layer),
        parallel=None, pool_ctx=None, dk_rows=state["dk_val"].shape[2])
    err = ctypes.create_string_buffer(256)
    if core().dlm_delta_attention_f32(ctypes.byref(a), err, len(err)) != 0:
        raise RuntimeError(err.value.decode())
    return out


@torch.library.impl(lib, "delta_attention", "CPU")
def _delta_attention_cpu(q, k, v, k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt,
        start_pos, theta, gamma,
                         w_max, w_decode, layer):
    state = dict(zip(STATE, (k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt)))
    return _run(q, k, v, state, start_pos, theta, gamma, w_max, w_decode, layer,
                torch.empty(q.shape, dtype=torch.float32))


@torch.library.impl(lib, "delta_attention.out", "CPU")
def _delta_attention_out_cpu(q, k, v, k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt,
        start_pos, theta,
                             gamma, w_max, w_decode, layer, *, out):
    out.resize_(q.shape)
    state = dict(zip(STATE, (k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt)))
    return _run(q, k, v, state, start_pos, theta, gamma, w_max, w_decode, layer, out)


@torch.library.register_fake("deltallm::delta_attention")
def _delta_attention_fake(q, k, v, k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt,
        start_pos, theta,
                          gamma, w_max, w_decode, layer):
    torch._check(start_pos >= 0)
    torch._check(start_pos + q.shape[1] <= v_cache.shape[2])
    return torch.empty_like(q)


@torch.library.register_fake("deltallm::delta_attention.out")
def _delta_attention_out_fake(q, k, v, k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt,
        start_pos, theta,
                              gamma, w_max, w_decode, layer, *, out):
    return out


def _run_dense(q, k, v, k_cache, v_cache, start_pos, out):
    name = "deltallm::dense_attention"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k_cache.dim() != 4 or v_cache.dim() != 4:
        raise RuntimeError(f"{name}: q, k, v and the caches must have rank 4 [1, length, heads, head_dim]")
    if q.shape[0] != 1:
        raise RuntimeError(f"{name}: batch size must be 1")
    if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
        raise RuntimeError(f"{name}: q, k and v must have the same sequence length")
    D, hkv = q.shape[3], k.shape[2]
    if D % 8:
        raise RuntimeError(f"{name}: head_dim must be a multiple of 8, got {D}")
    if tuple(k.shape) != tuple(v.shape) or k.shape[3] != D:
        raise RuntimeError(f"{name}: k and v must have the same shape [1, S, kv_heads, {D}], got k {list(k.shape)} "
                           f"and v {list(v.shape)}")
    fmts = {}
    for t_name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        fmts[t_name] = _cache_format(name, t_name, t, D)
        row = formats.row_bytes(fmts[t_name], D) // t.element_size()
        if t.shape[1] != hkv or t.shape[3] != row or t.shape[2] != k_cache.shape[2]:
            raise RuntimeError(f"{name}: {t_name} must have shape [1, {hkv} (kv heads), max context (as k_cache's "
                               f"dim 2), {row}] (head-major), got {list(t.shape)}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise RuntimeError(f"{name}: the caches must be contiguous")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    a = DenseArgs(q=_ptr(q, "q"), k=_ptr(k, "k"), v=_ptr(v, "v"), k_cache=k_cache.data_ptr(),
                  v_cache=v_cache.data_ptr(), out=_ptr(out, "out"), seq_len=q.shape[1], n_heads=q.shape[2],
                  n_kv_heads=hkv, head_dim=D, max_len=k_cache.shape[2], v_format=int(fmts["v_cache"]),
                  k_format=int(fmts["k_cache"]), start_pos=int(start_pos), parallel=None, pool_ctx=None)
    err = ctypes.create_string_buffer(256)
    if core().dlm_dense_attention_f32(ctypes.byref(a), err, len(err)) != 0:
        raise RuntimeError(err.value.decode())
    return out


@torch.library.impl(lib, "dense_attention", "CPU")
def _dense_attention_cpu(q, k, v, k_cache, v_cache, start_pos):
    return _run_dense(q, k, v, k_cache, v_cache, start_pos, torch.empty(q.shape, dtype=torch.float32))


@torch.library.impl(lib, "dense_attention.out", "CPU")
def _dense_attention_out_cpu(q, k, v, k_cache, v_cache, start_pos, *, out):
    out.resize_(q.shape)
    return _run_dense(q, k, v, k_cache, v_cache, start_pos, out)


@torch.library.register_fake("deltallm::dense_attention")
def _dense_attention_fake(q, k, v, k_cache, v_cache, start_pos):
    torch._check(start_pos >= 0)
    torch._check(start_pos + q.shape[1] <= k_cache.shape[2])
    return torch.empty_like(q)


@torch.library.register_fake("deltallm::dense_attention.out")
def _dense_attention_out_fake(q, k, v, k_cache, v_cache, start_pos, *, out):
    return out
