"""Properties of the delta-attention references (the oracles the kernel is tested against)."""
from __future__ import annotations

import math

import pytest
import torch

from delegates.reference import band_width, delta_attention_vectorized, delta_encode, run_calls
from tests.delta_helpers import make_qkv


def dense_attention(q, k, v):
    n, H, D = q.shape
    rep = H // k.shape[1]
    kx = k.double().repeat_interleave(rep, 1).transpose(0, 1)
    vx = v.double().repeat_interleave(rep, 1).transpose(0, 1)
    s = q.double().transpose(0, 1) @ kx.transpose(1, 2) / math.sqrt(D)
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, -1) @ vx).transpose(0, 1)


def test_theta_zero_is_dense_up_to_fp16_rounding():
    q, k, v = make_qkv(40, 6, 2, 32)
    out, _, counts = delta_attention_vectorized(q, k, v, theta=0.0, W=1)
    # k̂ = k up to the fp16 rounding of the last stored delta (error feedback: it does not accumulate)
    assert (out - dense_attention(q, k, v)).abs().max() <= 1e-3
    assert counts.s_m < 0.01  # almost every element changes


def test_the_sink_score_is_exact():
    q, k, v = make_qkv(8, 2, 1, 16)
    out, _, _ = delta_attention_vectorized(q, k, v, theta=100.0, W=1)   # every key but the own and the sink frozen
    dense = dense_attention(q, k, v)
    assert (out[:2] - dense[:2]).abs().max() <= 1e-12                  # positions 0, 1 see only exact keys
    assert (out[2:] - dense[2:]).abs().max() > 1e-3


def test_band_covering_everything_is_dense():
    q, k, v = make_qkv(40, 4, 4, 32)
    out, _, counts = delta_attention_vectorized(q, k, v, theta=1.0, W=40)
    assert (out - dense_attention(q, k, v)).abs().max() <= 1e-5
    assert counts.s_c == 0.0 and counts.s_m > 0.3


def test_first_key_exact_and_error_bounded_by_theta():
    q, k, v = make_qkv(50, 2, 2, 16)
    for theta in (0.3, 1.0):
        dk, k_last = delta_encode(k, torch.zeros_like(k[0]), 0, theta)
        k_hat = dk.cumsum(0)
        assert torch.equal(k_hat[0], k[0].half().float())         # the sink's Δ is k_0 in fp16
        assert torch.equal(dk, dk.half().float())                 # every stored Δ is an fp16 value
        assert torch.equal(k_last, k_hat[-1])                     # k̂ advances by exactly the stored Δ
        # never drifts: an element either moved (then k̂ − k is its fp16 rounding) or |k − k̂| <= θ
        assert (k_hat - k).abs().max() <= theta
        assert (dk[1:] != 0).float().mean() < 0.9


def test_oracle_equals_vectorized_for_one_call():
    q, k, v = make_qkv(30, 6, 2, 16)
    W = band_width(30, 0.1, 100, 4)
    ref, st = run_calls(q, k, v, [30], 30, 0.3, 0.1, 100, 4, dtype=torch.float32)
    vec, _, counts = delta_attention_vectorized(q, k, v, 0.3, W)
    assert (ref.double() - vec).abs().max() < 1e-5
    assert (st.prefill.dk_zeros, st.prefill.macs_performed, st.prefill.macs_dense) == \
        (counts.dk_zeros, counts.macs_performed, counts.macs_dense)


def test_prefill_then_decode_equals_whole_sequence_when_bands_agree():
    """Decode after a prefill sees the same keys as a whole-sequence run; with the same band
    width (W_d = the prefill's W) the outputs of the decoded positions are identical."""
    q, k, v = make_qkv(24, 2, 1, 16)
    W = band_width(20, 0.2, 100, 4)
    whole, _ = run_calls(q, k, v, [20, 1, 1, 1, 1], 24, 0.5, 0.2, 100, W, dtype=torch.float32)
    vec, _, _ = delta_attention_vectorized(q, k, v, 0.5, W)
    assert (whole.double() - vec).abs().max() < 1e-5


@pytest.mark.parametrize("n,gamma,w_max,w_decode,expected", [
    (1, 0.1, 100, 4, 4), (5, 0.1, 100, 4, 1), (100, 0.1, 100, 4, 10), (1000, 0.1, 64, 4, 64), (20, 0.0, 8, 2, 1)])
def test_band_width_rule(n, gamma, w_max, w_decode, expected):
    assert band_width(n, gamma, w_max, w_decode) == expected
