"""Rotary position embeddings (Hugging Face 'rotate half' layout), with Llama 3 scaling."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..config import RopeScalingConfig


def inverse_frequencies(head_dim: int, theta: float, scaling: Optional[RopeScalingConfig]) -> torch.Tensor:
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv.float()
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    scaled = torch.where(wavelen > low_wavelen, inv / scaling.factor, inv)
    mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    scaled = torch.where(mid, (1 - smooth) * inv / scaling.factor + smooth * inv, scaled)
    return scaled.float()


def rope_tables(head_dim: int, theta: float, scaling: Optional[RopeScalingConfig], max_len: int):
    """cos/sin tables of shape [max_len, head_dim]."""
    inv = inverse_frequencies(head_dim, theta, scaling)
    t = torch.arange(max_len, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half_matrix(head_dim: int) -> torch.Tensor:
    """R with x @ R.T == cat(-x[half:], x[:half]): a linear, so XNNPACK takes it (slices with a
    dynamic sequence length would not be delegated and would split the partition)."""
    half = head_dim // 2
    r = torch.zeros(head_dim, head_dim)
    idx = torch.arange(half)
    r[idx, idx + half] = -1.0
    r[idx + half, idx] = 1.0
    return r


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x: [B, S, H, D]; cos/sin: [1, S, 1, D]; rot: `rotate_half_matrix(D)`."""
    return x * cos + torch.nn.functional.linear(x, rot) * sin
