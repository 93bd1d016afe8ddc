"""Quantization presets through torchao.

- fp32: nothing.
- 8da8w: int8 dynamic per-token activations, int8 per-channel weights.
- 8da4w: int8 dynamic activations, int4 symmetric group-wise weights.
- ternary (BitNet b1.58): weights are t*s with t in {-1,0,1} (s per row); stored as int4 groups
  whose int values are exactly t and whose scales are exactly s, so the program holds the
  ternary weights losslessly (`ternary_report` proves it).
- embeddings: int8 / int4 weight-only, per row or group-wise (runs in the quantized
  embedding kernels, not in XNNPACK).

Weight-only linear configs are refused on purpose: they lower to XNNPACK and give wrong
numbers without an error on this stack.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from .config import EmbeddingQuant, LinearQuant, QuantizationConfig
from .errors import ConfigError


def _is_quantizable_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear)


def _check_group_size(model: nn.Module, group_size: int, field: str) -> None:
    for fqn, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.in_features % group_size:
            raise ConfigError(field, f"{group_size} does not divide the input size {mod.in_features} of {fqn}")


def quantize_model(model: nn.Module, q: QuantizationConfig) -> Dict[str, object]:
    """Quantize in place; return a short report for the manifest."""
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import (Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig,
                                                MappingType)

    report: Dict[str, object] = {"linear": q.linear.value, "embedding": q.embedding.value}
    ternary_scales: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        # Embeddings first: with tied weights lm_head keeps its own (fp32 or linear-quantized) copy.
        if q.embedding != EmbeddingQuant.NONE:
            gs = q.embedding_group_size
            emb = model.model.embed_tokens
            if gs and emb.embedding_dim % gs:
                raise ConfigError("quantization.embedding_group_size",
                                  f"{gs} does not divide the embedding size {emb.embedding_dim}")
            if model.lm_head.weight is emb.weight:
                model.lm_head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
            quantize_(model, IntxWeightOnlyConfig(
                weight_dtype=torch.int8 if q.embedding == EmbeddingQuant.INT8 else torch.int4,
                granularity=PerGroup(gs) if gs else PerAxis(0)),
                filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
            report["embedding_group_size"] = gs
        if q.linear == LinearQuant.Q8DA8W:
            quantize_(model, Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int8, weight_granularity=PerAxis(0)), filter_fn=_is_quantizable_linear)
        elif q.linear == LinearQuant.Q8DA4W:
            _check_group_size(model, q.group_size, "quantization.group_size")
            quantize_(model, Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int4, weight_granularity=PerGroup(q.group_size)),
                filter_fn=_is_quantizable_linear)
            report["group_size"] = q.group_size
        elif q.linear == LinearQuant.TERNARY:
            _check_group_size(model, q.group_size, "quantization.group_size")
            is_ternary = lambda m, fqn: isinstance(m, nn.Linear) and ".layers." in f".{fqn}"  # noqa: E731
            for fqn, mod in model.named_modules():
                if is_ternary(mod, fqn):
                    ternary_scales[fqn] = ternary_scale(mod.weight)
            quantize_(model, Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int4, weight_granularity=PerGroup(q.group_size),
                weight_mapping_type=MappingType.SYMMETRIC_NO_CLIPPING_ERR), filter_fn=is_ternary)
            for fqn, scale in ternary_scales.items():
                _set_exact_ternary(model.get_submodule(fqn).weight, scale)
            report["group_size"] = q.group_size
            report["ternary_layers"] = len(ternary_scales)
    return report


def ternary_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per output row, the scale s of a weight row that is t*s with t in {-1,0,1} (its largest |w|).
    BitNet's s is one per tensor; rows differ when key scales were folded into q/k projections."""
    s = weight.detach().abs().amax(dim=1)
    return torch.where(s > 0, s, torch.ones_like(s))


def _set_exact_ternary(qweight, row_scale: torch.Tensor) -> None:
    """Make the int4 groups hold exactly t (in {-1,0,1}) with each row's scale exactly s."""
    s = row_scale.to(qweight.scale.dtype).reshape(-1, *([1] * (qweight.scale.dim() - 1)))
    deq = qweight.dequantize()
    t = torch.round(deq / s.reshape(-1, 1)).clamp(-1, 1)
    qweight.qdata.copy_(t.to(qweight.qdata.dtype))
    qweight.scale.copy_(s.expand_as(qweight.scale))
    qweight.zero_point.zero_()


def ternary_report(model: nn.Module, reference: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Compare stored int4 weights with the ternary fp32 reference weights (fqn -> tensor)."""
    exact, values = 0, set()
    for fqn, ref in reference.items():
        w = model.get_submodule(fqn).weight
        values.update(int(v) for v in torch.unique(w.qdata))
        if torch.equal(w.dequantize(), ref):
            exact += 1
    return {"layers": len(reference), "bit_exact_layers": exact, "stored_int_values": sorted(values)}
