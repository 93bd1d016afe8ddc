"""Validation after export: the written program against the eager model, same quantization.

Both run the calibration prompt (chunked prefill, then greedy decode steps replaying the
eager model's choices); we record the max abs diff of the logits and the top-1 agreement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import torch

from .config import ExportConfig, LinearQuant
from .errors import ValidationError
from .runtime import PteModel, run_sequence

# Tolerances. fp32 with exact attention: XNNPACK reorders fp32 sums; logits of O(10) differ by
# ~1e-5..1e-4, so 1e-3.
# Approximations (quantization, delta attention with θ > 0) are not continuous functions of the
# activations: eager (torchao reference ops) and XNNPACK round the dynamic int8 activations
# differently, and fp32 differences of 1e-6 flip delta-encoding decisions of elements that sit
# at |Δk| = θ. So the program equals the approximate eager model only up to the approximation's
# own noise. Measured on SmolLM2-135M: 8da8w moves logits (scale 33) by 3.18 vs fp32 and the
# program differs from eager-8da8w by 3.34; delta θ=0.6 (fp32) program vs eager delta 0.226.
# The program may differ from the approximate eager model by at most APPROX_NOISE_FACTOR times
# the approximation's effect (approximate eager vs exact fp32 eager), plus the fp32 tolerance;
# a broken program (wrong weights, wrong cache) is off by the logit scale and disagrees on top-1.
FP32_MAX_ABS_DIFF = 1e-3
APPROX_NOISE_FACTOR = 2.0
FP32_MIN_TOP1 = 1.0
APPROX_MIN_TOP1 = 0.8


def is_quantized(cfg: ExportConfig) -> bool:
    return cfg.quantization.linear != LinearQuant.FP32 or cfg.quantization.embedding.value != "none"


def rounding_state(cfg: ExportConfig) -> List[str]:
    """The attention state formats that round what they store, so that the program equals the eager
    model only up to that rounding's own noise even in fp32 and at θ = 0: the ΔK stream of a delta
    program (fp16 values, and a budget that drops values), and every cache format but fp32. One fp32
    reordering of 1e-6 moves a value across an fp16 (or q8_0, q4_0) rounding boundary: measured on
    SmolLM2 fp32 at θ = 0, the program differs from eager by 0.0075, against the exact tolerance 1e-3."""
    a = cfg.attention
    out = []
    if a.kind.value == "delta":
        out.append("ΔK values stored as fp16" + (f", budget {a.dk_budget:g}" if a.dk_budget < 1 else ""))
    for name in ("k_cache", "v_cache"):
        fmt = getattr(a, name)
        if fmt.value != "fp32" and (name == "v_cache" or a.kind.value == "dense"):
            out.append(f"{name} {fmt.value}")
    return out


def is_approximate(cfg: ExportConfig) -> bool:
    """Quantized, delta attention with a non-zero threshold, or a state format that rounds."""
    a = cfg.attention
    delta = a.kind.value == "delta" and (a.theta > 0 or any(t > 0 for t in (a.theta_per_layer or [])))
    return is_quantized(cfg) or delta or bool(rounding_state(cfg))


def tolerances(cfg: ExportConfig, noise: Optional[float] = None) -> Dict[str, float]:
    approximate = is_approximate(cfg)
    mad = cfg.validation.max_abs_diff
    if mad is None:
        mad = FP32_MAX_ABS_DIFF + (APPROX_NOISE_FACTOR * noise if approximate and noise else 0.0)
    top1 = cfg.validation.min_top1
    if top1 is None:
        top1 = APPROX_MIN_TOP1 if approximate else FP32_MIN_TOP1
    return {"max_abs_diff": mad, "min_top1": top1}


def eager_logits(model: torch.nn.Module, prompt_ids: List[int], cfg: ExportConfig,
                 forced: Optional[List[int]] = None) -> List[torch.Tensor]:
    with torch.no_grad():
        return run_sequence(lambda t, s: model(t, torch.tensor([s])), clip_prompt(prompt_ids, cfg),
                            cfg.validation.decode_steps, cfg.export.max_seq_len, forced=forced)


def exact_reference(model: torch.nn.Module, prompt_ids: List[int], cfg: ExportConfig) -> List[torch.Tensor]:
    """Logits of the (not yet quantized) model with exact attention."""
    from .attention import exact_attention

    with exact_attention(model):
        return eager_logits(model, prompt_ids, cfg)


def clip_prompt(prompt_ids: List[int], cfg: ExportConfig) -> List[int]:
    return prompt_ids[: cfg.export.max_context_len - cfg.validation.decode_steps]


def compare(reference: List[torch.Tensor], candidate: List[torch.Tensor]) -> Dict[str, float]:
    e, p = torch.stack(reference), torch.stack(candidate)
    agree = (e.argmax(-1) == p.argmax(-1)).float().mean().item()
    return {"max_abs_diff": float((e - p).abs().max()), "top1_agreement": agree,
            "positions": int(e.shape[0]), "logit_scale": float(e.abs().max())}


def validate_program(model: torch.nn.Module, pte_path: Path, prompt_ids: List[int], cfg: ExportConfig,
                     fp32_logits: Optional[List[torch.Tensor]] = None) -> Dict[str, object]:
    """`fp32_logits`: the eager model's logits before quantization and with exact attention
    (`exact_reference`), for the approximation-noise tolerance; decode then replays that
    model's tokens everywhere."""
    steps, msl = cfg.validation.decode_steps, cfg.export.max_seq_len
    prompt_ids = clip_prompt(prompt_ids, cfg)
    forced = [int(x.argmax()) for x in fp32_logits[:-1]] if fp32_logits is not None else None
    eager = eager_logits(model, prompt_ids, cfg, forced)
    chosen = forced or [int(x.argmax()) for x in eager[:-1]]
    pte = PteModel(pte_path)
    got = run_sequence(pte.forward, prompt_ids, steps, msl, forced=chosen)
    result = compare(eager, got)
    noise = None
    if fp32_logits is not None and is_approximate(cfg):
        noise = compare(fp32_logits, eager)["max_abs_diff"]
        result["approximation_effect"] = {"eager_vs_exact_fp32_max_abs_diff": noise,
                                          "program_vs_exact_fp32_max_abs_diff": compare(fp32_logits, got)["max_abs_diff"]}
    tol = tolerances(cfg, noise)
    if rounding_state(cfg):
        result["rounding_state"] = rounding_state(cfg)
    result.update({"prompt_tokens": len(prompt_ids), "decode_steps": steps, "tolerance": tol,
                   "load_s": round(pte.load_s, 4)})
    ok = result["max_abs_diff"] <= tol["max_abs_diff"] and result["top1_agreement"] >= tol["min_top1"]
    result["passed"] = bool(ok)
    return result


def raise_if_failed(result: Dict[str, object], name: Optional[str] = None) -> None:
    if not result["passed"]:
        tol = result["tolerance"]
        raise ValidationError(
            f"validation failed{' for ' + name if name else ''}: max_abs_diff {result['max_abs_diff']:.3g} "
            f"(tolerance {tol['max_abs_diff']:.3g}), top-1 agreement {result['top1_agreement']:.3f} "
            f"(minimum {tol['min_top1']:.3f}); the program was not written")
