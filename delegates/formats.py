"""The attention caches' formats: fp32, fp16, q8_0 and q4_0 (llama.cpp's block layouts), as one unit:
each format's tensor layout, its bytes per row, and the PyTorch reference of its encode and decode
(the oracle the C kernels match: delegates/csrc/ukernels/qblocks.h has the rules).

A cache is [1, Hkv, T, row] (head-major: each kv head's rows one contiguous stream): float32 or
float16 rows of head_dim values, or uint8 rows of head_dim/32
blocks (q8_0: fp16 scale + 32 int8, 34 bytes; q4_0: fp16 scale + 16 bytes of nibbles, 18 bytes).
The C core tells the format from the dtype and the row length, so the op schemas stay the same.
"""
from __future__ import annotations

import enum

import torch

BLOCK = 32
F16_MAX = 65504.0


class Format(enum.IntEnum):
    """DLM_FMT_* of delegates/csrc/deltaattn.h."""

    FP32 = 0
    FP16 = 1
    Q8_0 = 2
    Q4_0 = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> "Format":
        try:
            return cls[str(name).upper()]
        except KeyError:
            raise ValueError(f"unknown cache format {name!r}: one of {[f.label for f in cls]}") from None

    @property
    def quantized(self) -> bool:
        return self in (Format.Q8_0, Format.Q4_0)


BLOCK_BYTES = {Format.Q8_0: 34, Format.Q4_0: 18}


def as_format(fmt) -> Format:
    """A Format from a Format, its name ("q8_0"), its number, or torch.float32 / torch.float16."""
    if isinstance(fmt, torch.dtype):
        if fmt not in (torch.float32, torch.float16):
            raise ValueError(f"no cache format stores {fmt}: use a Format")
        return Format.FP32 if fmt == torch.float32 else Format.FP16
    return Format.parse(fmt) if isinstance(fmt, str) else Format(fmt)


def row_bytes(fmt: Format, head_dim: int) -> int:
    """Bytes of one row (one key or value of one kv head); ValueError if head_dim does not fit."""
    fmt = Format(fmt)
    if fmt == Format.FP32:
        return 4 * head_dim
    if fmt == Format.FP16:
        return 2 * head_dim
    if head_dim % BLOCK:
        raise ValueError(f"{fmt.label} needs head_dim to be a multiple of {BLOCK}, got {head_dim}")
    return head_dim // BLOCK * BLOCK_BYTES[fmt]


def empty_cache(fmt: Format, max_len: int, n_kv_heads: int, head_dim: int) -> torch.Tensor:
    """A zeroed cache [1, Hkv, T, row] of the format."""
    fmt = Format(fmt)
    if fmt == Format.FP32:
        return torch.zeros(1, n_kv_heads, max_len, head_dim)
    if fmt == Format.FP16:
        return torch.zeros(1, n_kv_heads, max_len, head_dim, dtype=torch.float16)
    return torch.zeros(1, n_kv_heads, max_len, row_bytes(fmt, head_dim), dtype=torch.uint8)


def cache_rows(cache: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a cache [1, Hkv, T, row] as [stop − start, Hkv, row] (token-major, like
    the call's inputs: compare with encode(k[start:stop]))."""
    return cache[0, :, start:stop].transpose(0, 1)


def format_of(t: torch.Tensor, head_dim: int) -> Format:
    """A cache tensor's format (as the C core infers it); ValueError naming what fits."""
    last = t.shape[-1]
    if t.dtype == torch.float32 and last == head_dim:
        return Format.FP32
    if t.dtype == torch.float16 and last == head_dim:
        return Format.FP16
    if t.dtype == torch.uint8 and head_dim % BLOCK == 0:
        for fmt in (Format.Q8_0, Format.Q4_0):
            if last == row_bytes(fmt, head_dim):
                return fmt
    raise ValueError(f"must be float32 or float16 [.., {head_dim}], or uint8 q8_0 / q4_0 blocks "
                     f"[.., {head_dim // BLOCK * 34} or {head_dim // BLOCK * 18}] (head_dim a multiple of 32), "
                     f"got {t.dtype} [.., {last}]")


def _blocks(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    if x.shape[-1] % BLOCK:
        raise ValueError(f"the last dimension must be a multiple of {BLOCK}, got {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK)


def _scale16(d: torch.Tensor) -> torch.Tensor:
    """fp32 scales as stored: clamped to ±65504, rounded to fp16, as bytes [.., 2]."""
    return d.clamp(-F16_MAX, F16_MAX).half().contiguous().view(torch.uint8).reshape(*d.shape, 2)


def _recip(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d != 0, 1.0 / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d))


def q8_codes(x: torch.Tensor):
    """q8 blocks of x [.., D] (fp32 scale): (codes int8 [.., D/32, 32], scales fp32 [.., D/32])."""
    b = _blocks(x)
    d = b.abs().amax(-1) / 127.0
    q = torch.round(b * _recip(d)[..., None])      # round half to even, like nearbyint / cvtps2dq
    return q.to(torch.int8), d


def q4_codes(x: torch.Tensor):
    """q4_0 blocks of x: (codes in [-8, 7] int8 [.., D/32, 32], scales fp32 [.., D/32])."""
    b = _blocks(x)
    first = b.abs().argmax(-1, keepdim=True)       # the first element of largest |x|
    d = torch.gather(b, -1, first)[..., 0] / -8.0
    q = torch.round(b * _recip(d)[..., None]).clamp(-8, 7)
    return q.to(torch.int8), d


def encode(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """Rows x [.., D] as a cache of the format stores them (float32 / float16 / uint8 [.., row_bytes])."""
    fmt = Format(fmt)
    if fmt == Format.FP32:
        return x.float()
    if fmt == Format.FP16:
        return x.float().clamp(-F16_MAX, F16_MAX).half()
    if fmt == Format.Q8_0:
        q, d = q8_codes(x)
        body = q.view(torch.uint8)
    else:
        q, d = q4_codes(x)
        u = (q.to(torch.int16) + 8).to(torch.uint8)
        body = u[..., :16] | (u[..., 16:] << 4)
    out = torch.cat([_scale16(d), body], -1)
    return out.reshape(*x.shape[:-1], -1)


def decode(c: torch.Tensor, fmt: Format, head_dim: int) -> torch.Tensor:
    """A cache's rows back to fp32 [.., D] (exact for every format)."""
    fmt = Format(fmt)
    if not fmt.quantized:
        return c.float()
    blocks = c.reshape(*c.shape[:-1], head_dim // BLOCK, BLOCK_BYTES[fmt])
    d = blocks[..., :2].contiguous().view(torch.float16).float()          # [.., nb, 1]
    body = blocks[..., 2:]
    if fmt == Format.Q8_0:
        q = body.contiguous().view(torch.int8).float()
    else:
        q = torch.cat([body & 15, body >> 4], -1).float() - 8
    return (d * q).reshape(*c.shape[:-1], head_dim)


def round_trip(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """x as the format keeps it, in fp32: what the kernel computes with."""
    return decode(encode(x, fmt), fmt, x.shape[-1])


def query_round_trip(q: torch.Tensor) -> torch.Tensor:
    """The queries a quantized K cache is read with (q8 blocks, fp32 scales), in float64."""
    codes, d = q8_codes(q)
    return (codes.double() * d.double()[..., None]).reshape(q.shape)
