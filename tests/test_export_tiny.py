"""Tiny Llama and BitNet configs: export, run in the ExecuTorch runtime, match eager."""
from __future__ import annotations

import hashlib

import json
from pathlib import Path

import pytest
import torch

from export.config import load_config
from export.pipeline import build_model, encode_prompt
from export.quantize import quantize_model
from export.runtime import PteModel, run_sequence
from export.sources import load_source

PROMPT = "Static caches, dynamic shapes: prefill then decode through one method."


def eager_and_pte(out: Path, manifest: dict, *overrides: str, steps: int = 6):
    cfg = load_config(manifest["config"]["name"] + ".yaml", [f"{k}={v}" for k, v in []] + list(overrides))
    src = load_source(cfg)
    built = build_model(cfg, src)
    quantize_model(built.model, cfg.quantization)
    ids = encode_prompt(src.tokenizer, PROMPT, src.args.bos_id)
    with torch.no_grad():
        eager = run_sequence(lambda t, s: built.model(t, torch.tensor([s])), ids, steps, cfg.export.max_seq_len)
    pte = PteModel(out / manifest["pte"])
    got = run_sequence(pte.forward, ids, steps, cfg.export.max_seq_len, forced=[int(x.argmax()) for x in eager[:-1]])
    return torch.stack(eager), torch.stack(got), pte


def test_tiny_llama_fp32_matches_eager(tiny_llama_fp32):
    out, manifest = tiny_llama_fp32
    eager, got, _ = eager_and_pte(out, manifest)
    scale = eager.abs().max().item()
    assert scale > 1.0  # non-trivial logits
    # fp32: within 1e-5 relative to the logit scale (XNNPACK reorders fp32 sums).
    assert (eager - got).abs().max().item() <= 1e-5 * scale
    assert torch.equal(eager.argmax(-1), got.argmax(-1))


def test_tiny_llama_manifest(tiny_llama_fp32):
    out, m = tiny_llama_fp32
    assert (out / "tiny_llama.pte").stat().st_size == m["pte_bytes"]
    assert hashlib.sha256((out / "tiny_llama.pte").read_bytes()).hexdigest() == m["pte_sha256"]
    assert (out / "tokenizer.json").is_file()
    assert m["architecture"]["architecture"] == "llama"
    assert m["architecture"]["rope_scaling"]["factor"] == 32.0
    assert m["parameters"] > 0 and m["source"]["kind"] == "random"
    v = m["validation"]
    assert v["enabled"] and v["passed"] and v["top1_agreement"] == 1.0
    assert v["max_abs_diff"] <= v["tolerance"]["max_abs_diff"]
    assert m["ops"]["delegate_calls"] > 0 and m["ops"]["delegated"] > 0
    for stage in ("load", "transform", "quantize", "export", "lower", "serialize", "validate"):
        assert stage in m["timings_s"]
    assert set(m["versions"]) >= {"torch", "executorch", "torchao", "transformers"}
    assert m["metadata_methods"]["get_max_context_len"] == 128
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_metadata_methods_in_program(tiny_llama_fp32):
    out, m = tiny_llama_fp32
    pte = PteModel(out / m["pte"])
    assert pte.metadata("get_max_seq_len") == 32
    assert pte.metadata("get_max_context_len") == 128
    assert pte.metadata("use_kv_cache") in (True, 1)
    assert pte.metadata("enable_dynamic_shape") in (True, 1)
    assert pte.metadata("get_vocab_size") == 512


def test_restart_at_position_zero_gives_same_logits(tiny_llama_fp32):
    out, m = tiny_llama_fp32
    pte = PteModel(out / m["pte"])
    toks = torch.arange(3, 20).reshape(1, -1)
    first = pte.forward(toks, 0).clone()
    pte.forward(torch.tensor([[5]]), toks.shape[1])
    again = pte.forward(toks, 0)
    assert torch.equal(first, again)


def test_dense_kernels_give_the_same_program_output(tmp_path, tiny_llama_fp32, tiny_llama_dense_f16kv):
    """attention.kind=dense runs our kernel's exact path by default; custom_sdpa (stock ExecuTorch)
    is the other choice. Both are exact attention: the same logits up to fp32 summation order."""
    from tests.conftest import export_with_cli

    out, m = tiny_llama_fp32
    assert m["attention"]["dense_kernel"] == "deltallm"
    assert m["attention"]["k_cache"] == "fp32" and "theta" not in m["attention"]     # only what the program has
    assert m["ops"]["portable_kinds"].get("deltallm.dense_attention.default") == 2   # one per layer
    sdpa = export_with_cli("tiny_llama.yaml", tmp_path / "sdpa", "attention.dense_kernel=custom_sdpa")
    assert "deltallm.dense_attention.default" not in sdpa["ops"]["portable_kinds"]
    assert sdpa["ops"]["portable_kinds"].get("llama.custom_sdpa.default") == 2
    f16 = export_with_cli("tiny_llama.yaml", tmp_path / "f16", "attention.v_cache=fp16")
    f16kv_dir, f16kv = tiny_llama_dense_f16kv
    for other in (sdpa, f16, f16kv):
        assert other["validation"]["passed"]
        assert other["attention_state"]["dense_fp32_kv_bytes"] == m["attention_state"]["bytes"]
    assert sdpa["attention_state"]["ratio_to_dense_fp32_kv"] == 1.0
    assert f16["attention_state"]["ratio_to_dense_fp32_kv"] == 0.75
    assert f16kv["attention_state"]["ratio_to_dense_fp32_kv"] == 0.5
    toks = torch.arange(3, 40).reshape(1, -1)
    logits = []
    for d, man in ((out, m), (tmp_path / "sdpa", sdpa), (tmp_path / "f16", f16), (f16kv_dir, f16kv)):
        pte = PteModel(d / man["pte"])
        logits.append(torch.cat([pte.forward(toks[:, :30], 0)] + [pte.forward(toks[:, i:i + 1], i) for i in range(30, 37)]))
    scale = logits[0].abs().max().item()
    assert (logits[0] - logits[1]).abs().max().item() <= 1e-5 * scale
    assert 0 < (logits[0] - logits[2]).abs().max().item() <= 1e-2 * scale   # fp16 V: close, not equal
    assert 0 < (logits[2] - logits[3]).abs().max().item() <= 1e-2 * scale   # and fp16 K on top


def test_quantized_kv_cache_programs_run_and_count_their_bytes(tmp_path):
    """attention.k_cache / v_cache = q8_0 / q4_0 (head_dim 32: two heads of the tiny model): the program
    validates against eager with the same caches, stores 34 / 18 bytes per 32 elements (the manifest
    counts them), and its logits stay close to the fp32-cache program's, not equal to them."""
    from tests.conftest import export_with_cli

    shape = ("arch.n_heads=2", "arch.n_kv_heads=1")
    runs = {}
    for name, k, v in (("fp32", "fp32", "fp32"), ("q8_0", "q8_0", "q8_0"), ("q4_0", "q4_0", "q4_0"),
                       ("q8k_q4v", "q8_0", "q4_0")):
        m = export_with_cli("tiny_llama.yaml", tmp_path / name, *shape, f"attention.k_cache={k}", f"attention.v_cache={v}")
        assert m["validation"]["passed"] and m["attention"]["k_cache"] == k and m["attention"]["v_cache"] == v
        runs[name] = (tmp_path / name / m["pte"], m["attention_state"])
    rows = {"fp32": 128, "q8_0": 34, "q4_0": 18}   # bytes per row of head_dim 32, one layer and kv head
    for name, (k, v) in {"q8_0": ("q8_0", "q8_0"), "q4_0": ("q4_0", "q4_0"), "q8k_q4v": ("q8_0", "q4_0")}.items():
        st = runs[name][1]
        assert st["bytes_per_token"] == 2 * (rows[k] + rows[v])          # 2 layers x 1 kv head
        assert st["ratio_to_dense_fp32_kv"] == pytest.approx((rows[k] + rows[v]) / 256)
    toks = torch.arange(3, 40).reshape(1, -1)
    logits = {}
    for name, (pte_path, _) in runs.items():
        pte = PteModel(pte_path)
        logits[name] = torch.cat([pte.forward(toks[:, :30], 0)] + [pte.forward(toks[:, i:i + 1], i) for i in range(30, 37)])
    scale = logits["fp32"].abs().max().item()
    err = {n: (logits[n] - logits["fp32"]).abs().max().item() / scale for n in ("q8_0", "q4_0")}
    assert 0 < err["q8_0"] < err["q4_0"] <= 0.1, err


@pytest.mark.parametrize("fixture", ["tiny_llama_8da8w", "tiny_llama_8da4w"])
def test_tiny_llama_quantized_matches_eager_same_quantization(request, fixture):
    out, manifest = request.getfixturevalue(fixture)
    cfg = manifest["config"]["quantization"]
    eager, got, _ = eager_and_pte(out, manifest, *(f"quantization.{k}={v}" for k, v in cfg.items()))
    scale = eager.abs().max().item()
    # Same quantization on both sides; only the dynamic activation rounding differs (see validate.py).
    assert (eager - got).abs().max().item() <= 0.02 * scale
    assert (eager.argmax(-1) == got.argmax(-1)).float().mean().item() >= 0.8
    assert manifest["quantization"]["linear"] == cfg["linear"]


def test_quantized_program_is_smaller(tiny_llama_fp32, tiny_llama_8da4w):
    assert tiny_llama_8da4w[1]["pte_bytes"] < 0.5 * tiny_llama_fp32[1]["pte_bytes"]


def test_tiny_bitnet_ternary_bit_exact_and_matches_eager(tiny_bitnet):
    out, m = tiny_bitnet
    check = m["quantization"]["ternary_check"]
    assert check["layers"] == 2 * 7
    assert check["bit_exact_layers"] == check["layers"]
    assert set(check["stored_int_values"]) <= {-1, 0, 1}
    eager, got, _ = eager_and_pte(out, m)
    scale = eager.abs().max().item()
    assert (eager - got).abs().max().item() <= 0.02 * scale
    assert m["validation"]["passed"]


def test_outputs_get_the_usual_file_mode(tiny_llama_fp32):
    """Not mkstemp's 0600: a pushed .pte must stay readable by an app's user."""
    import os
    import stat

    out, manifest = tiny_llama_fp32
    mask = os.umask(0)
    os.umask(mask)
    for name in (manifest["pte"], f"{manifest['name']}.json", "tokenizer.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask


def test_quiet_export_prints_nothing_on_stderr_and_names_the_tolerance(tmp_path):
    """-q: no library noise (torchao/torch warnings, progress bars, the runtime's C++ log lines); the
    summary's validation line shows its tolerance beside the measured difference."""
    import re
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "export", "--config", "tiny_llama.yaml", "-q", f"output.dir={tmp_path}"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("validation:"))
    assert re.fullmatch(r"validation: passed, max_abs_diff=\S+ \(tolerance [0-9.e-]+\) top1=1\.000 \(minimum 1\.000\)",
                        line), line


@pytest.mark.parametrize("overrides, rounding", [
    ((), []),
    (("attention.kind=delta", "attention.theta=0"), ["ΔK values stored as fp16"]),
    (("attention.kind=delta", "attention.theta=0", "attention.dk_budget=0.5"), ["ΔK values stored as fp16, budget 0.5"]),
    (("attention.kind=delta", "attention.theta=0", "attention.v_cache=q8_0"), ["ΔK values stored as fp16", "v_cache q8_0"]),
    (("attention.k_cache=fp16",), ["k_cache fp16"]),
    (("attention.k_cache=q4_0", "attention.v_cache=fp16"), ["k_cache q4_0", "v_cache fp16"]),
])
def test_state_formats_that_round_are_approximate(overrides, rounding):
    """fp32 at θ = 0 is approximate when the state rounds: the tolerance grows by the rounding's own
    measured effect (SmolLM2 fp32 delta θ = 0 differs from eager by 0.0075 > the exact 1e-3)."""
    from export.validate import is_approximate, rounding_state, tolerances

    cfg = load_config("tiny_llama.yaml", ["arch.n_heads=2", "arch.n_kv_heads=1", *overrides])
    assert rounding_state(cfg) == rounding
    assert is_approximate(cfg) == bool(rounding)
    tol = tolerances(cfg, noise=0.004)
    assert tol["max_abs_diff"] == pytest.approx(1e-3 + (2 * 0.004 if rounding else 0))


@pytest.mark.parametrize("overrides", [
    ("attention.kind=delta", "attention.theta=0"),
    ("attention.kind=delta", "attention.theta=0", "attention.v_cache=fp16"),
    ("attention.kind=delta", "attention.theta=0", "attention.v_cache=q8_0", "attention.dk_budget=0.5"),
    ("attention.kind=delta", "attention.theta=0", "attention.v_cache=q4_0"),
    ("attention.k_cache=fp16", "attention.v_cache=fp16"),
    ("attention.k_cache=q8_0", "attention.v_cache=q8_0"),
    ("attention.k_cache=q4_0", "attention.v_cache=q4_0"),
])
def test_theta_zero_exports_and_validates_in_fp32_for_every_state_format(tmp_path, overrides):
    """The reference is exact fp32 attention (the delta and rounding cores swapped out), so the
    tolerance carries the format's own effect, which is > 0 for every format that rounds."""
    from tests.conftest import export_with_cli

    m = export_with_cli("tiny_llama.yaml", tmp_path, "arch.n_heads=2", "arch.n_kv_heads=1", *overrides)
    v = m["validation"]
    assert v["passed"] and v["rounding_state"]
    effect = v["approximation_effect"]["eager_vs_exact_fp32_max_abs_diff"]
    assert effect > 0 and v["tolerance"]["max_abs_diff"] == pytest.approx(1e-3 + 2 * effect)


@pytest.mark.slow
def test_smollm2_fp32_delta_theta_zero_validates(tmp_path):
    """A user's first sanity check: exact keys in fp32 (was refused: 0.0075 against 1e-3)."""
    from export.cli import main

    code = main(["--config", "smollm2_135m.yaml", "-q", "quantization.linear=fp32", "attention.kind=delta",
                 "attention.theta=0", f"output.dir={tmp_path}"])
    assert code == 0
