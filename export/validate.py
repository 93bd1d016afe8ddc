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

# Default tolerances. fp32: XNNPACK reorders fp32 sums, logits of O(10) differ by ~1e-5..1e-4.
# Quantized: eager computes the dynamic int8 activation quantization in fp32 with
# torchao's reference ops, XNNPACK with its own rounding, so an activation on a rounding
# boundary can move by one step; measured max diffs on SmolLM2 (8da8w) were ~0.1-0.3 on logits
# of magnitude ~20, so 1.0 leaves margin while still catching a broken program (which is off by
# many units and disagrees on top-1).
DEFAULT_MAX_ABS_DIFF = {LinearQuant.FP32: 1e-3}
DEFAULT_QUANT_MAX_ABS_DIFF = 1.0
DEFAULT_MIN_TOP1 = {LinearQuant.FP32: 1.0}
DEFAULT_QUANT_MIN_TOP1 = 0.8


def tolerances(cfg: ExportConfig) -> Dict[str, float]:
    lin = cfg.quantization.linear
    quantized = lin != LinearQuant.FP32 or cfg.quantization.embedding.value != "none"
    mad = cfg.validation.max_abs_diff
    if mad is None:
        mad = DEFAULT_QUANT_MAX_ABS_DIFF if quantized else DEFAULT_MAX_ABS_DIFF[LinearQuant.FP32]
    top1 = cfg.validation.min_top1
    if top1 is None:
        top1 = DEFAULT_QUANT_MIN_TOP1 if quantized else DEFAULT_MIN_TOP1[LinearQuant.FP32]
    return {"max_abs_diff": mad, "min_top1": top1}


def compare(eager_logits: List[torch.Tensor], pte_logits: List[torch.Tensor]) -> Dict[str, float]:
    e, p = torch.stack(eager_logits), torch.stack(pte_logits)
    agree = (e.argmax(-1) == p.argmax(-1)).float().mean().item()
    return {"max_abs_diff": float((e - p).abs().max()), "top1_agreement": agree,
            "positions": int(e.shape[0]), "logit_scale": float(e.abs().max())}


def validate_program(model: torch.nn.Module, pte_path: Path, prompt_ids: List[int],
                     cfg: ExportConfig) -> Dict[str, object]:
    steps, msl = cfg.validation.decode_steps, cfg.export.max_seq_len
    prompt_ids = prompt_ids[: cfg.export.max_context_len - steps]
    with torch.no_grad():
        eager = run_sequence(lambda t, s: model(t, torch.tensor([s])), prompt_ids, steps, msl)
    chosen = [int(x.argmax()) for x in eager[:-1]]
    pte = PteModel(pte_path)
    got = run_sequence(pte.forward, prompt_ids, steps, msl, forced=chosen)
    result = compare(eager, got)
    tol = tolerances(cfg)
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
