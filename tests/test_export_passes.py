"""Skipping idle XNNPACK passes writes the same program, byte for byte."""
from __future__ import annotations

import pytest

from export import xnnpack_passes
from export.config import load_config
from export.lower import constant_methods, export_program, lower
from export.pipeline import build_model
from export.quantize import quantize_model
from export.sources import load_source

# case -> (config, overrides, the session fixture that exports the same with skipping on: the default)
CASES = {
    "fp32": ("tiny_llama.yaml", [], "tiny_llama_fp32"),
    "8da8w_int8_embedding": ("tiny_llama.yaml", ["quantization.linear=8da8w", "quantization.embedding=int8"],
                             "tiny_llama_8da8w"),
    "8da4w": ("tiny_llama.yaml", ["quantization.linear=8da4w", "quantization.group_size=32",
                                  "quantization.embedding=int4", "quantization.embedding_group_size=32"],
              "tiny_llama_8da4w"),
    "bitnet_ternary": ("tiny_bitnet.yaml", [], "tiny_bitnet"),
    "delta": ("tiny_llama.yaml", ["attention.kind=delta", "attention.theta=0.3", "attention.gamma=0.1",
                                  "attention.w_decode=4"], "tiny_llama_delta"),
}


SLOW = {"fp32", "8da4w"}   # the default suite keeps one quantized, the ternary and the delta program


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_skipping_idle_passes_writes_identical_program(case, request):
    """The shared export (skipping on, the default) against a lowering of the same model with every pass."""
    config, overrides, fixture = CASES[case]
    out_dir, manifest = request.getfixturevalue(fixture)
    skipped = manifest["ops"]["skipped_xnnpack_passes"]
    assert skipped.get("ConvertToSDPAPass", 0) >= 1, skipped

    cfg = load_config(config, overrides + ["backend.skip_idle_passes=false"])
    src = load_source(cfg)
    model = build_model(cfg, src).model
    quantize_model(model, cfg.quantization)
    lowered = lower(export_program(model, cfg), cfg, constant_methods(cfg, src.args))
    assert lowered.skipped_passes == {}
    assert lowered.buffer == (out_dir / manifest["pte"]).read_bytes()


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
