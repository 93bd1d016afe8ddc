"""bench/value_delta_accuracy.py: the ΔV hook gives our attention core the values ΔV reconstructs,
across calls of one sequence, and counts ΔV's zeros."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from value_delta_accuracy import ValueDelta  # noqa: E402

from delegates.attention_core import ExactAttention  # noqa: E402
from delegates.reference import dense_attention  # noqa: E402


def _qkv(n, h=4, hkv=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n, h, d, generator=g)
    k = torch.randn(1, n, hkv, d, generator=g)
    # values that mostly drift slowly: many deltas stay under θ_v
    v = (torch.randn(1, n, hkv, d, generator=g) * 0.05).cumsum(1) + torch.randn(1, 1, hkv, d, generator=g)
    return q, k, v


def _v_hat(v, theta):
    """ΔV's reconstruction, element by element, from the definition (token 0 exact)."""
    v = v[0].float()
    out, ref = torch.empty_like(v), v[0].half().float()   # token 0's delta (from 0) is stored in fp16 too
    out[0] = ref
    for t in range(1, len(v)):
        d = v[t] - ref
        ref = torch.where(d.abs() > theta, ref + d.half().float(), ref)
        out[t] = ref
    return out.double()


def test_core_sees_the_reconstructed_values_across_calls():
    n, theta = 40, 0.1
    q, k, v = _qkv(n)
    core = ExactAttention(2, 16, 64)
    hook = ValueDelta([core], [theta])
    try:
        outs = [core(q[:, :25], k[:, :25], v[:, :25], 0)]
        for t in range(25, n):   # decode steps carry the reference value over from the prefill
            outs.append(core(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], torch.tensor([t])))
    finally:
        hook.remove()
    got = torch.cat(outs, dim=1)[0].double()
    v_hat = _v_hat(v, theta)
    assert (v_hat - v[0].double()).abs().max() <= theta * 1.01   # the reference never drifts
    want = dense_attention(q[0].double(), k[0].double(), v_hat)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    assert not torch.allclose(got, dense_attention(q[0].double(), k[0].double(), v[0].double()), atol=1e-3)
    zeros = sum(int(((v_hat[t] - v_hat[t - 1]) == 0).sum()) for t in range(1, n))
    assert hook.zeros == zeros and hook.elements == v[0].numel() and 0 < zeros < v[0].numel()
    # removed: the core sees the raw values again
    fresh = ExactAttention(2, 16, 64)
    plain = fresh(q, k, v, 0)[0].double()
    assert torch.allclose(plain, dense_attention(q[0].double(), k[0].double(), v[0].double()), atol=1e-4)


def test_a_call_that_skips_positions_is_refused():
    q, k, v = _qkv(8)
    core = ExactAttention(2, 16, 64)
    hook = ValueDelta([core], [0.1])
    try:
        core(q[:, :4], k[:, :4], v[:, :4], 0)
        with pytest.raises(SystemExit, match="position 6 after one ending at 4"):
            core(q[:, 6:7], k[:, 6:7], v[:, 6:7], 6)
    finally:
        hook.remove()
