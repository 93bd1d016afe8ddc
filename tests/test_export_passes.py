"""Skipping idle XNNPACK passes writes the same program, byte for byte."""
from __future__ import annotations

import pytest

from export import xnnpack_passes
from export.config import load_config
from export.lower import constant_methods, export_program, lower
from export.pipeline import build_model
from export.quantize import quantize_model
from export.sources import load_source

CASES = {
    "fp32": ("tiny_llama.yaml", []),
    "8da8w_int8_embedding": ("tiny_llama.yaml", ["quantization.linear=8da8w", "quantization.embedding=int8"]),
    "8da4w": ("tiny_llama.yaml", ["quantization.linear=8da4w", "quantization.group_size=32"]),
    "bitnet_ternary": ("tiny_bitnet.yaml", []),
    "delta": ("tiny_llama.yaml", ["attention.kind=delta", "attention.theta=0.3"]),
}


SLOW = {"fp32", "8da4w"}   # the default suite keeps one quantized, the ternary and the delta program


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_skipping_idle_passes_writes_identical_program(case):
    config, overrides = CASES[case]
    buffers = {}
    for skip in (False, True):
        cfg = load_config(config, overrides + [f"backend.skip_idle_passes={str(skip).lower()}"])
        src = load_source(cfg)
        model = build_model(cfg, src).model
        quantize_model(model, cfg.quantization)
        xnnpack_passes.skipped.clear()
        buffers[skip] = lower(export_program(model, cfg), cfg, constant_methods(cfg, src.args)).buffer
        assert bool(xnnpack_passes.skipped) == skip
    assert "ConvertToSDPAPass" in xnnpack_passes.skipped
    assert buffers[True] == buffers[False]


def test_a_pass_runs_when_its_ops_are_there():
    assert xnnpack_passes.needed("ConvertToSDPAPass", {"aten._softmax.default", "aten.linear.default"})
    assert not xnnpack_passes.needed("ConvertToSDPAPass", {"aten.linear.default"})
    assert xnnpack_passes.needed("ChannelsLastTaggedReshapePass", {"aten.convolution.default"})
    assert xnnpack_passes.needed("SomeFuturePass", set())           # unknown passes always run
    assert xnnpack_passes.needed("ConvertToLinearPass", set())


def test_skipping_is_undone_after_lowering():
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    before = XNNPACKPassManager.transform
    with xnnpack_passes.skip_idle_xnnpack_passes():
        assert XNNPACKPassManager.transform is not before
    assert XNNPACKPassManager.transform is before
