"""Per-layer θ calibration: curves from the kernel, and an allocation no worse than one global θ."""
from __future__ import annotations

import random

import pytest
import torch

from export.config import load_config
from export.evaluate.calibrate import THETA_GRID, LayerCurve, allocate, layer_curves
from export.evaluate.lm import EagerLM


@pytest.fixture(scope="module")
def curves():
    lm = EagerLM(load_config("tiny_llama.yaml", ["attention.kind=delta", "attention.gamma=0.1"]))
    with torch.no_grad():   # random init barely uses attention: make it matter (peaky scores, strong output)
        for layer in lm.model.model.layers:
            for proj, f in (("q_proj", 8.0), ("k_proj", 8.0), ("o_proj", 20.0)):
                getattr(layer.self_attn, proj).weight.mul_(f)
    rng = random.Random(0)
    seqs = [[rng.randrange(3, 500) for _ in range(n)] for n in (60, 90, 120)]
    return layer_curves(lm.model, seqs)


def test_curves_start_exact_and_grow_sparser(curves):
    assert len(curves) == 2
    for c in curves:
        assert c.thetas == list(THETA_GRID)
        assert c.error[0] == pytest.approx(0.0, abs=1e-9)        # θ = 0 is the exact model
        assert c.s_c[0] < 0.05 and c.s_c[-1] > 0.5                # only the band is kept at θ = 5
        assert all(b >= a - 1e-9 for a, b in zip(c.s_c, c.s_c[1:]))
        assert c.error[-1] > c.error[1] >= 0.0


def test_allocation_reaches_target_and_beats_any_global_theta_as_sparse(curves):
    target = 0.5 * max(sum(c.s_c[i] for c in curves) / len(curves) for i in range(len(THETA_GRID)))
    idx = allocate(curves, target)
    s_pl = sum(c.s_c[i] for c, i in zip(curves, idx)) / len(curves)
    e_pl = sum(c.error[i] for c, i in zip(curves, idx))
    assert s_pl >= target
    for g in range(len(THETA_GRID)):
        s_g = sum(c.s_c[g] for c in curves) / len(curves)
        if s_g >= s_pl:
            assert e_pl <= sum(c.error[g] for c in curves) + 1e-12


def test_allocation_prefers_the_layer_that_tolerates_sparsity():
    cheap = LayerCurve(0, [0.0, 1.0, 2.0], [0.0, 0.5, 0.8], [0.0, 0.001, 0.002])
    costly = LayerCurve(1, [0.0, 1.0, 2.0], [0.0, 0.5, 0.8], [0.0, 0.1, 0.5])
    idx = allocate([cheap, costly], 0.4)
    assert idx[0] == 2 and idx[1] == 0
