"""Per-layer θ calibration: reach a target prefill S_c with the least change of the output.

On calibration text (SQuAD dev paragraphs from the end of the file, away from the documents
the tasks score) the model runs with exact attention once; then, for every layer l and every
θ of a grid, it runs again from layer l's recorded input with only that layer approximated
(our kernel, the same C core as the runtime). Each run gives the layer's S_c(θ) from the
kernel's counters and e_l(θ) = mean KL(p_exact ‖ p_θ) of the next-token distributions: the
end-to-end effect, not a local proxy (a proxy relative to the residual stream's norm picked
deep layers for large θ, and cost 4x the perplexity of one global θ).
All layers have the same dense MAC count, so the model's S_c is the mean of the layers'.
For small changes the layers' KLs add up, so the allocation minimises Σ e_l(θ_l) − λ·Σ S_c,l(θ_l)
layer by layer, with λ bisected until the mean S_c reaches the target.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import List, Sequence

import torch

THETA_GRID = (0.0, 0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 3.0, 5.0)


@dataclass
class LayerCurve:
    layer: int
    thetas: List[float]
    s_c: List[float]
    error: List[float]        # mean KL(exact ‖ approximated), nats per token


@dataclass
class Calibration:
    target_s_c: float
    thetas: List[float]          # chosen θ per layer
    s_c: float                   # mean S_c over layers on the calibration text
    error: float                 # Σ e_l
    curves: List[LayerCurve]

    def override(self) -> str:
        return "attention.theta_per_layer=[" + ",".join(f"{t:g}" for t in self.thetas) + "]"


def _kl(logp_ref: torch.Tensor, logp: torch.Tensor) -> float:
    return float((logp_ref.exp() * (logp_ref - logp)).sum(-1).mean())


def layer_curves(model, sequences: Sequence[List[int]], grid: Sequence[float] = THETA_GRID,
                 progress=None) -> List[LayerCurve]:
    """S_c(θ) and KL(θ) of every layer approximated alone. `model` has delta cores (θ is set here)."""
    from delegates import stats

    from .packing import packed_layers

    cores = [layer.self_attn.core for layer in model.model.layers]
    if any(type(c).__name__ != "DeltaAttention" for c in cores):
        raise ValueError("calibration needs a model built with attention.kind=delta")
    saved = [c.theta for c in cores]
    lengths = [len(s) for s in sequences]
    tokens = torch.tensor([[t for s in sequences for t in s]])
    curves = []
    try:
        for c in cores:
            c.theta = 0.0
        with torch.no_grad():
            inputs: List[torch.Tensor] = []
            ref = torch.log_softmax(model.lm_head(packed_layers(model, lengths, model.model.embed_tokens(tokens),
                                                                0, inputs)[0]).double(), -1)
            for li, core in enumerate(cores):
                s_c, err = [], []
                for theta in grid:
                    core.theta = theta
                    stats.reset()
                    out = packed_layers(model, lengths, inputs[li], li)[0]
                    err.append(max(0.0, _kl(ref, torch.log_softmax(model.lm_head(out).double(), -1))))
                    s_c.append(stats.read("prefill")[li].s_c)
                    if progress:
                        progress()
                core.theta = 0.0
                curves.append(LayerCurve(li, list(grid), s_c, err))
    finally:
        for c, t in zip(cores, saved):
            c.theta = t
    return curves


def allocate(curves: List[LayerCurve], target: float) -> List[int]:
    """Per layer the grid index minimising e − λ·S_c, with λ bisected so mean S_c >= target."""
    def pick(lam):
        return [min(range(len(c.thetas)), key=lambda i: c.error[i] - lam * c.s_c[i]) for c in curves]

    def mean_sc(idx):
        return sum(c.s_c[i] for c, i in zip(curves, idx)) / len(curves)

    lo, hi = -12.0, 4.0                       # log10 λ
    if mean_sc(pick(10 ** hi)) < target:      # even the largest θ everywhere falls short
        return pick(10 ** hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if mean_sc(pick(10 ** mid)) >= target:
            hi = mid
        else:
            lo = mid
    return pick(10 ** hi)


def calibration_sequences(lm, n: int, max_tokens: int = 384) -> List[List[int]]:
    """The last n SQuAD dev paragraphs of <= max_tokens tokens (the tasks read the file from
    its start: perplexity's paragraphs and SQuAD's questions are far from these)."""
    from ..datasets import squad_paragraphs, squad_v11_dev_path

    seen, out = set(), []
    for text in reversed(squad_paragraphs(squad_v11_dev_path())):
        if text in seen:
            continue
        seen.add(text)
        ids = lm.with_bos(lm.encode(text))
        if len(ids) <= min(max_tokens, lm.max_context_len):
            out.append(ids)
        if len(out) == n:
            break
    return out


def calibrate(lm, target: float, paragraphs: int = 4, quiet: bool = False) -> Calibration:
    """Per-layer θ for `lm` (an EagerLM with delta attention; γ, w_max, W_d from its config)."""
    from ..errors import ConfigError
    from ..progress import ProgressBar

    if not 0.0 < target < 1.0:
        raise ConfigError("--target-s-c", f"must be in (0, 1), got {target}")
    if not lm.is_delta:
        raise ConfigError("attention.kind", "calibration needs attention.kind=delta")
    bar = ProgressBar("calibrate (layer, θ)", len(lm.model.model.layers) * len(THETA_GRID), quiet=quiet)
    sequences = calibration_sequences(lm, paragraphs)
    if not sequences:
        raise ConfigError("--paragraphs", f"no calibration paragraph fits the context of {lm.max_context_len} tokens")
    curves = layer_curves(lm.model, sequences, progress=bar.update)
    idx = allocate(curves, target)
    thetas = [c.thetas[i] for c, i in zip(curves, idx)]
    s_c = sum(c.s_c[i] for c, i in zip(curves, idx)) / len(curves)
    return Calibration(target, thetas, s_c, sum(c.error[i] for c, i in zip(curves, idx)), curves)


def global_theta_for(curves: List[LayerCurve], target: float) -> float:
    """The smallest grid θ that, used by every layer, reaches the target mean S_c (for comparison)."""
    for i, theta in enumerate(curves[0].thetas):
        if sum(c.s_c[i] for c in curves) / len(curves) >= target:
            return theta
    return curves[0].thetas[-1]


def cmd_calibrate(ns) -> int:
    from ..config import load_config
    from .lm import EagerLM

    cfg = load_config(ns.config, list(ns.overrides) + ["attention.kind=delta"])
    cal = calibrate(EagerLM(cfg), ns.target_s_c, ns.paragraphs, quiet=ns.quiet)
    g = global_theta_for(cal.curves, ns.target_s_c)
    gi = cal.curves[0].thetas.index(g)
    print("| layer | θ | S_c | KL (nats/token) |\n|---:|---:|---:|---:|")
    for c, t in zip(cal.curves, cal.thetas):
        i = c.thetas.index(t)
        print(f"| {c.layer} | {t:g} | {c.s_c[i]:.1%} | {c.error[i]:.2e} |")
    print(f"\nper-layer: mean S_c {cal.s_c:.1%}, Σ KL {cal.error:.3e}; global θ {g:g}: "
          f"S_c {sum(c.s_c[gi] for c in cal.curves) / len(cal.curves):.1%}, "
          f"Σ KL {sum(c.error[gi] for c in cal.curves):.3e}")
    print(cal.override())
    print(f"calibrated on {ns.paragraphs} paragraphs, γ {cfg.attention.gamma:g}", file=sys.stderr)
    return 0 if math.isfinite(cal.s_c) else 1
