"""Calibration: key scales and per-layer θ, written as a file for `attention.calibration`.

Key scales (export/calibration.py) come first: one exact pass over the calibration text
measures each RoPE pair's query RMS per kv head; s = rms^α moves the thresholding error to
where the queries barely look. The dense model is unchanged by them.

Per-layer θ then reaches a target prefill S_c with the least change of the output.

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

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..calibration import DeltaCalibration, scales_from_query_rms

THETA_GRID = (0.0, 0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 3.0, 5.0)


@dataclass
class LayerCurve:
    layer: int
    thetas: List[float]
    s_c: List[float]
    error: List[float]        # mean KL(exact ‖ approximated), nats per token


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
    its start: perplexity's paragraphs and SQuAD's questions are far from these). A model whose
    context is shorter than max_tokens gets the paragraphs' first tokens instead."""
    from ..datasets import squad_paragraphs, squad_dev_path

    limit = min(max_tokens, lm.max_context_len)
    seen, out = set(), []
    for text in reversed(squad_paragraphs(squad_dev_path())):
        if text in seen:
            continue
        seen.add(text)
        ids = lm.with_bos(lm.encode(text))
        if len(ids) > limit and lm.max_context_len >= max_tokens:
            continue
        out.append(ids[:limit])
        if len(out) == n:
            break
    return out


@torch.no_grad()
def query_pair_ms(model, sequences: Sequence[List[int]]) -> torch.Tensor:
    """[L, Hkv, D/2]: mean squared norm of each RoPE pair of the queries that read each kv head,
    with exact attention (θ = 0), over the calibration tokens."""
    from .packing import packed_layers

    a = model.args
    h, hkv, d = a.n_heads, a.n_kv_heads, a.head_dim
    cores = [layer.self_attn.core for layer in model.model.layers]
    sums = torch.zeros(len(cores), hkv, d // 2, dtype=torch.float64)
    count = [0]

    def hook(li):
        def pre(_module, args):
            q = args[0][0].double().pow(2).sum(0).view(hkv, h // hkv, d).mean(1)   # [Hkv, D]
            sums[li] += q[:, : d // 2] + q[:, d // 2:]
            if li == 0:
                count[0] += args[0].shape[1]
        return pre

    saved = [c.theta for c in cores]
    handles = [c.register_forward_pre_hook(hook(li)) for li, c in enumerate(cores)]
    try:
        for c in cores:
            c.theta = 0.0
        lengths = [len(s) for s in sequences]
        tokens = torch.tensor([[t for s in sequences for t in s]])
        packed_layers(model, lengths, model.model.embed_tokens(tokens))
    finally:
        for hd in handles:
            hd.remove()
        for c, t in zip(cores, saved):
            c.theta = t
    return sums / max(count[0], 1)


def calibrate(cfg, source, target: Optional[float], alpha: float = 0.0, paragraphs: int = 4,
              quiet: bool = False) -> DeltaCalibration:
    """Key scales (alpha > 0) and/or per-layer θ for a target prefill S_c, for the model of `cfg`
    (attention.kind=delta; γ, w_max, W_d and quantization from it)."""
    from ..config import AttentionKind
    from ..errors import ConfigError
    from ..progress import ProgressBar
    from .lm import EagerLM

    if target is not None and not 0.0 < target < 1.0:
        raise ConfigError("--target-s-c", f"must be in (0, 1), got {target}")
    if alpha < 0:
        raise ConfigError("--alpha", f"must be >= 0, got {alpha}")
    if target is None and alpha == 0:
        raise ConfigError("--target-s-c", "nothing to calibrate: give a target S_c and/or --alpha > 0")
    if cfg.attention.kind != AttentionKind.DELTA:
        raise ConfigError("attention.kind", "calibration needs attention.kind=delta")
    a = source.args
    cal = DeltaCalibration(a.n_layers, a.n_kv_heads, a.head_dim, alpha=alpha, gamma=cfg.attention.gamma,
                           target_s_c=target, source_sha256=source.info.get("sha256"))
    lm = EagerLM(cfg, source, calibration=cal)
    sequences = calibration_sequences(lm, paragraphs)
    if not sequences:
        raise ConfigError("--paragraphs", f"no calibration paragraph fits the context of {lm.max_context_len} tokens")
    cal.text = f"{len(sequences)} SQuAD dev paragraphs from the end of the file, {sum(map(len, sequences))} tokens"
    if alpha > 0:
        cal.key_scales = scales_from_query_rms(query_pair_ms(lm.model, sequences), alpha).tolist()
        lm = EagerLM(cfg, source, calibration=cal)   # scales folded in before quantization
    if target is not None:
        bar = ProgressBar("calibrate (layer, θ)", a.n_layers * len(THETA_GRID), quiet=quiet)
        curves = layer_curves(lm.model, sequences, progress=bar.update)
        idx = allocate(curves, target)
        cal.theta_per_layer = [c.thetas[i] for c, i in zip(curves, idx)]
        cal.calibration_s_c = sum(c.s_c[i] for c, i in zip(curves, idx)) / len(curves)
        cal.curves = [asdict(c) for c in curves]
    return cal


def global_theta_for(curves: List[LayerCurve], target: float) -> float:
    """The smallest grid θ that, used by every layer, reaches the target mean S_c (for comparison)."""
    for i, theta in enumerate(curves[0].thetas):
        if sum(c.s_c[i] for c in curves) / len(curves) >= target:
            return theta
    return curves[0].thetas[-1]


def cmd_calibrate(ns) -> int:
    from ..config import load_config
    from ..sources import load_source

    cfg = load_config(ns.config, list(ns.overrides) + ["attention.kind=delta", "attention.calibration="])
    cal = calibrate(cfg, load_source(cfg), ns.target_s_c, ns.alpha, ns.paragraphs, quiet=ns.quiet)
    if cal.theta_per_layer is not None:
        curves = [LayerCurve(**c) for c in cal.curves]
        g = global_theta_for(curves, ns.target_s_c)
        gi = curves[0].thetas.index(g)
        print("| layer | θ | S_c | KL (nats/token) |\n|---:|---:|---:|---:|")
        for c, t in zip(curves, cal.theta_per_layer):
            i = c.thetas.index(t)
            print(f"| {c.layer} | {t:g} | {c.s_c[i]:.1%} | {c.error[i]:.2e} |")
        chosen = sum(c.error[c.thetas.index(t)] for c, t in zip(curves, cal.theta_per_layer))
        print(f"\nper-layer: mean S_c {cal.calibration_s_c:.1%}, Σ KL {chosen:.3e}; global θ {g:g}: "
              f"S_c {sum(c.s_c[gi] for c in curves) / len(curves):.1%}, "
              f"Σ KL {sum(c.error[gi] for c in curves):.3e}")
    if cal.key_scales is not None:
        flat = torch.tensor(cal.key_scales).flatten()
        print(f"key scales α {cal.alpha:g}: {flat.min():.3g}..{flat.max():.3g} (geometric mean 1 per layer)")
    cal.save(Path(ns.out))
    print(f"attention.calibration={ns.out}")
    print(f"calibrated on {cal.text}, γ {cfg.attention.gamma:g}", file=sys.stderr)
    return 0
