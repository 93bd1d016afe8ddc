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


def _eager(overrides):
    """The eager tiny model of these overrides over the sequence, and the kernel's counts."""
    cfg = load_config("tiny_llama.yaml", list(overrides))
    built = build_model(cfg, load_source(cfg))
    stats.reset()
    with torch.no_grad():
        out = _sequence(lambda t, s: built.model(t, torch.tensor([s])))
    return out, stats.summary()


def test_delta_program_matches_eager_and_counts_in_runtime(tiny_llama_delta):
    out, m = tiny_llama_delta
    assert m["attention"]["kind"] == "delta" and m["attention"]["theta"] == 0.3
    assert "k_cache" not in m["attention"] and "dense_kernel" not in m["attention"]     # a delta program has no K cache
    assert "deltallm.delta_attention.default" in m["ops"]["portable_kinds"]
    eager, eager_counts = _eager(["attention.kind=delta", "attention.theta=0.3"])
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


class _ErrorCore(torch.nn.Module):
    """The operator alone over an 8-position state (2 kv heads, head_dim 16); the start position is an input."""

    def __init__(self, theta: float):
        super().__init__()
        from delegates import op

        self.theta, self.names = theta, op.STATE
        for name, t in op.empty_state(8, 4, 2, 16).items():
            self.register_buffer(name, t, persistent=False)

    def forward(self, q, k, v, pos):
        p = pos[0].item()
        return torch.ops.deltallm.delta_attention(q, k, v, *[getattr(self, n) for n in self.names], p,
                                                  self.theta, 0.1, 100, 4, 0)


ERROR_PROGRAMS = {  # name -> (theta, key/value shape): the runtime kernel must reject the bad ones
    "ok": (0.5, (1, 2, 2, 16)), "negative_theta": (-1.0, (1, 2, 2, 16)),
    "head_dim": (0.5, (1, 2, 2, 8)), "kv_heads": (0.5, (1, 2, 3, 16))}


@pytest.fixture(scope="module")
def error_programs(tmp_path_factory):
    """One .pte per case, exported here once; each runs in a subprocess (a crash must not take pytest down)."""
    from executorch.exir import to_edge_transform_and_lower

    from export.runtime import load_kernel_libraries

    load_kernel_libraries()
    out = tmp_path_factory.mktemp("error_programs")
    for name, (theta, kshape) in ERROR_PROGRAMS.items():
        ex = (torch.randn(1, 2, 4, 16), torch.randn(*kshape), torch.randn(*kshape), torch.tensor([0]))
        ep = torch.export.export(_ErrorCore(theta), ex, strict=True)
        (out / f"{name}.pte").write_bytes(to_edge_transform_and_lower(ep).to_executorch().buffer)
    return out


RUN_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from export.runtime import load_kernel_libraries
    load_kernel_libraries()
    from executorch.runtime import Runtime
    for arg in sys.argv[1:]:                      # name:path:start:kv_heads:head_dim, one run each
        name, path, start, kv_heads, head_dim = arg.split(":")
        os.write(2, f"\\n=== {name}\\n".encode())      # the runtime logs to fd 2: mark where each run starts
        method = Runtime.get().load_program(path).load_method("forward")
        kv = (1, 2, int(kv_heads), int(head_dim))
        try:
            method.execute([torch.randn(1, 2, 4, 16), torch.randn(*kv), torch.randn(*kv), torch.tensor([int(start)])])
            print(name, "OK", flush=True)
        except Exception as e:
            print(name, "RAISED", type(e).__name__, flush=True)
""")

RUNS = {"negative_theta": ("negative_theta", 0), "fits": ("ok", 6), "overflow": ("ok", 7),
        "head_dim": ("head_dim", 0), "kv_heads": ("kv_heads", 0)}   # run -> (program, start position)


@pytest.fixture(scope="module")
def error_runs(error_programs):
    """Every run in one subprocess (a crash must not take pytest down): run -> (outcome, its stderr)."""
    args = [f"{run}:{error_programs / (prog + '.pte')}:{start}:{ERROR_PROGRAMS[prog][1][2]}:{ERROR_PROGRAMS[prog][1][3]}"
            for run, (prog, start) in RUNS.items()]
    r = subprocess.run([sys.executable, "-c", RUN_SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    outcomes = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.split(" ", 1)[0] in RUNS)
    logs = {part.split("\n", 1)[0]: part for part in r.stderr.split("\n=== ")[1:]}
    assert set(outcomes) == set(RUNS), r.stdout + r.stderr[-3000:]
    return {run: (outcomes[run], logs.get(run, "")) for run in RUNS}


def test_runtime_kernel_reports_negative_theta_without_crashing(error_runs):
    outcome, log = error_runs["negative_theta"]
    assert outcome.startswith("RAISED"), log
    assert "theta must be finite and >= 0" in log


def test_runtime_cache_overflow_is_an_error_not_a_crash(error_runs):
    assert error_runs["fits"][0] == "OK", error_runs["fits"][1]
    assert error_runs["overflow"][0].startswith("RAISED"), error_runs["overflow"][1]


@pytest.mark.parametrize("case,message", [("head_dim", "head_dim mismatch"), ("kv_heads", "kv head count mismatch")])
def test_runtime_kernel_rejects_mismatched_shapes(error_runs, case, message):
    outcome, log = error_runs[case]
    assert outcome.startswith("RAISED"), log
    assert message in log


def _state_bytes(T, R, hkv, D, v_bytes, stream_rows=None):
    """One layer's delta state, counted from the layout in delegates/csrc/deltaattn.h."""
    per_token = hkv * (D * v_bytes + D // 8 + 4)            # V, ΔK bitmask, nnz
    values = hkv * (stream_rows or T) * D * 2               # the fp16 ΔK value streams
    ckpt = T // 256 + 1                                     # k̂ checkpoints every DLM_CKPT_STRIDE positions
    return T * per_token + values + R * hkv * D * 4 + (2 + ckpt) * hkv * D * 4  # + key ring, sink, k̂, checkpoints


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


def test_budgeted_delta_program_matches_eager_and_its_state_shrinks(tiny_llama_delta_budget):
    """attention.dk_budget=0.25 (θ 0.1): a ΔK stream of 2 + ⌈126·4/16⌉ = 34 rows per kv head instead of 128
    (4 values per key on average, head_dim 16); the runtime gives eager's output and counts, and the
    budget binds (the output differs from the unbudgeted program's)."""
    from tests.conftest import DELTA_BUDGET

    out, m = tiny_llama_delta_budget
    assert m["attention"]["dk_budget"] == 0.25
    assert m["attention_state"]["bytes"] == 2 * _state_bytes(128, 4, 2, 16, 2, stream_rows=34)
    eager, eager_counts = _eager(DELTA_BUDGET)
    stats.reset()
    got = _sequence(PteModel(out / m["pte"]).forward)
    assert (eager - got).abs().max().item() <= 1e-5 * eager.abs().max().item()
    assert stats.summary()["prefill"]["layers"] == eager_counts["prefill"]["layers"]
    full, full_counts = _eager([o for o in DELTA_BUDGET if "dk_budget" not in o])
    assert (full - eager).abs().max().item() > 1e-5 * full.abs().max().item()   # beyond the parity tolerance
    assert full_counts["prefill"]["total"]["s_m"] < eager_counts["prefill"]["total"]["s_m"]
