"""Delta attention inside real .pte files, run by the ExecuTorch runtime."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from delegates import stats
from export.config import load_config
from export.pipeline import build_model
from export.runtime import PteModel, run_sequence
from export.sources import load_source

ROOT = Path(__file__).resolve().parent.parent
IDS = list(range(3, 60))


def _sequence(step):
    return torch.stack(run_sequence(step, IDS, 6, 32, forced=[7, 8, 9, 10, 11, 12]))


def test_delta_program_matches_eager_and_counts_in_runtime(tiny_llama_delta):
    out, m = tiny_llama_delta
    assert m["attention"]["kind"] == "delta" and m["attention"]["theta"] == 0.3
    assert "deltallm.delta_attention.default" in m["ops"]["portable_kinds"]
    cfg = load_config("tiny_llama.yaml", ["attention.kind=delta", "attention.theta=0.3"])
    built = build_model(cfg, load_source(cfg))
    stats.reset()
    with torch.no_grad():
        eager = _sequence(lambda t, s: built.model(t, torch.tensor([s])))
    eager_counts = stats.summary()
    pte = PteModel(out / m["pte"])
    stats.reset()
    got = _sequence(pte.forward)
    runtime_counts = stats.summary()
    assert (eager - got).abs().max().item() <= 1e-5 * eager.abs().max().item()
    # Counted by the kernel inside the runtime: per layer, prefill and decode separately.
    assert len(runtime_counts["prefill"]["layers"]) == 2 and len(runtime_counts["decode"]["layers"]) == 2
    for phase in ("prefill", "decode"):
        for a, b in zip(runtime_counts[phase]["layers"], eager_counts[phase]["layers"]):
            assert a == b
    pre = runtime_counts["prefill"]["total"]
    assert 0.0 < pre["s_c"] <= pre["s_m"] < 1.0
    assert runtime_counts["decode"]["layers"][0]["calls"] == 6


def test_theta_zero_delta_program_equals_dense_program(tiny_llama_delta_theta0, tiny_llama_fp32):
    delta = PteModel(tiny_llama_delta_theta0[0] / tiny_llama_delta_theta0[1]["pte"])
    dense = PteModel(tiny_llama_fp32[0] / tiny_llama_fp32[1]["pte"])
    a, b = _sequence(delta.forward), _sequence(dense.forward)
    assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


RUNTIME_ERROR_SCRIPT = textwrap.dedent("""
    import sys, torch
    from delegates import op
    from export.runtime import load_kernel_libraries
    from executorch.exir import to_edge_transform_and_lower
    load_kernel_libraries()

    class Core(torch.nn.Module):
        def __init__(self, theta):
            super().__init__()
            self.theta = theta
            for name, t in op.empty_state(8, 4, 2, 16).items():
                self.register_buffer(name, t, persistent=False)
        def forward(self, q, k, v, pos):
            p = pos[0].item()
            return torch.ops.deltallm.delta_attention(q, k, v, *[getattr(self, n) for n in op.STATE], p,
                                                      self.theta, 0.1, 100, 4, 0)

    theta, start, case = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    kshape = {"ok": (1, 2, 2, 16), "head_dim": (1, 2, 2, 8), "kv_heads": (1, 2, 3, 16)}[case]
    ex = (torch.randn(1, 2, 4, 16), torch.randn(*kshape), torch.randn(*kshape), torch.tensor([0]))
    ep = torch.export.export(Core(theta), ex, strict=True)
    buf = to_edge_transform_and_lower(ep).to_executorch().buffer
    from executorch.runtime import Runtime
    method = Runtime.get().load_program(buf).load_method("forward")
    try:
        method.execute([*ex[:3], torch.tensor([start])])
    except Exception as e:
        print("RAISED", type(e).__name__)
        sys.exit(3)
    print("OK")
""")


def _run_error_script(theta: float, start: int, case: str = "ok"):
    return subprocess.run([sys.executable, "-c", RUNTIME_ERROR_SCRIPT, str(theta), str(start), case], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_runtime_kernel_reports_negative_theta_without_crashing():
    r = _run_error_script(-1.0, 0)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert "theta must be finite and >= 0" in r.stderr


def test_runtime_cache_overflow_is_an_error_not_a_crash():
    ok = _run_error_script(0.5, 6)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr[-2000:]
    r = _run_error_script(0.5, 7)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]


@pytest.mark.parametrize("case,message", [("head_dim", "head_dim mismatch"), ("kv_heads", "kv head count mismatch")])
def test_runtime_kernel_rejects_mismatched_shapes(case, message):
    r = _run_error_script(0.5, 0, case)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert message in r.stderr


def _state_bytes(T, R, hkv, D, v_bytes):
    """One layer's delta state, counted from the layout in delegates/csrc/deltaattn.h."""
    per_token = hkv * (D * v_bytes + D // 8 + 2 * D + 4)   # V, ΔK bitmask, fp16 ΔK values, nnz
    ckpt = T // 256 + 1                                     # k̂ checkpoints every DLM_CKPT_STRIDE positions
    return T * per_token + R * hkv * D * 4 + (2 + ckpt) * hkv * D * 4  # + key ring, sink, k̂, checkpoints


def test_fp16_v_cache_program_runs_and_the_manifest_counts_its_state(tmp_path, tiny_llama_delta):
    from tests.conftest import export_with_cli

    m16 = export_with_cli("tiny_llama.yaml", tmp_path, "attention.kind=delta", "attention.theta=0.3",
                          "attention.gamma=0.1", "attention.w_decode=4", "attention.v_cache=fp16")
    assert m16["validation"]["enabled"] and m16["attention"]["v_cache"] == "fp16"
    out, m32 = tiny_llama_delta
    # tiny_llama: 2 layers, 2 kv heads, head_dim 16, max context 128, chunks of <= 32: ring = max(⌊0.1·32⌋, W_d 4)
    dense = 2 * (2 * 128 * 2 * 16 * 4)
    for m, v_bytes in ((m32, 4), (m16, 2)):
        st = m["attention_state"]
        assert st["dense_fp32_kv_bytes"] == dense and st["max_context_len"] == 128
        assert st["bytes"] == 2 * _state_bytes(128, 4, 2, 16, v_bytes)
        assert st["ratio_to_dense_fp32_kv"] == pytest.approx(st["bytes"] / dense)
    assert m16["attention_state"]["ratio_to_dense_fp32_kv"] < 0.6 < m32["attention_state"]["ratio_to_dense_fp32_kv"]
    # the fp16 program runs in the runtime and stays close to the fp32-V one
    a = _sequence(PteModel(out / m32["pte"]).forward)
    b = _sequence(PteModel(tmp_path / m16["pte"]).forward)
    assert (a - b).abs().max() < 0.05 * a.abs().max()
