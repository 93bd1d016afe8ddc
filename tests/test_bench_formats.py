"""bench/attention_formats.py (decode over every cache format against its roofline) and
bench/phone_model.py (llvm-mca on the compiled kernels + a memory roofline): they run, their
figures hang together, and the static analysis sees real kernel steps (no call inside a step)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args, timeout=900):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_attention_formats_rows_and_roofline():
    r = run("attention_formats.py", "--shapes", "smollm2-135m", "--context", "300", "--threads", "1", "--reps", "1",
            "--json")
    out = json.loads(r.stdout)
    bw = out["bandwidth_gb_per_s"]["1"]
    assert bw > 1.0
    rows = {row["format"]: row for row in out["rows"]}
    assert set(rows) == {"fp32", "fp16", "q8_0", "q4_0"}
    # bytes per token, one layer: 3 kv heads x (K + V) rows of head_dim 64
    assert {f: r["bytes_per_token"] for f, r in rows.items()} == {"fp32": 1536, "fp16": 768, "q8_0": 408, "q4_0": 216}
    assert rows["fp16"]["ratio_streamed"] == 1.0 and rows["fp16"]["ratio_warm"] == 1.0
    for row in rows.values():
        mem_ms = row["bytes_per_token"] * 299 / (bw * 1e9) * 1e3
        assert row["roofline_ms"] == pytest.approx(max(mem_ms, row["warm_ms"]), rel=1e-6)
        assert row["bound"] == ("memory" if mem_ms >= row["warm_ms"] else "compute")
        assert row["of_roofline"] == pytest.approx(row["streamed_ms"] / row["roofline_ms"], rel=1e-6)
        assert row["gb_per_s"] == pytest.approx(row["bytes_per_token"] * 299 / row["streamed_ms"] / 1e6, rel=1e-6)


def test_attention_formats_refuses_bad_input():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "attention_formats.py"), "--context", "1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--context values must be >= 2" in r.stderr


def test_phone_model_static_tables():
    r = run("phone_model.py", "--no-validate", "--cpus", "cortex-x4", "cortex-a720", "cortex-a520", "--contexts",
            "4096", "--json")
    out = json.loads(r.stdout)
    cyc = {(c["target"], c["mcpu"], c["rows"], c["head_dim"], c["format"]): c["cycles_per_key"] for c in out["cycles"]}
    for key, v in cyc.items():
        assert 1.0 < v < 5000.0, key
    # SDOT variants exist for the quantized keys only, and do fewer cycles than the Armv8.0 fallback
    for fmt in ("q8_0", "q4_0"):
        assert cyc[("neondot", "cortex-x4", 3, 64, fmt)] < cyc[("neon", "cortex-x4", 3, 64, fmt)]
    assert ("neondot", "cortex-x4", 3, 64, "fp16") not in cyc
    # LLVM 19: the A720 shares the X4's (Neoverse N2) model here; the A520 has its own
    groups = [set(g) for g in out["same_model"]]
    assert {"cortex-x4", "cortex-a720"} in groups
    phones = out["phones"]
    assert {p["soc"] for p in phones} == {"snapdragon-8-gen-3", "dimensity-9300"}   # the SoCs whose cores were analysed
    by = {(p["model"], p["format"]): p for p in phones}
    for model in ("smollm2-135m", "llama-3.2-1b", "bitnet-2b4t"):
        assert by[(model, "q4_0")]["state_mb"] < by[(model, "q8_0")]["state_mb"] < by[(model, "fp16")]["state_mb"]
        for p in (by[(model, f)] for f in ("fp16", "q8_0", "q4_0", "delta")):
            assert p["bound"] in ("memory", "compute") and p["decode_ms"] > p["attention_us"] / 1e3


def test_phone_model_regions_have_no_calls(tmp_path):
    """A call inside a kernel's step (a memset for a runtime-bounded loop, an outlined helper) is
    what the static model caught twice in the NEON kernels: every step compiles to straight-line code."""
    sys.path.insert(0, str(ROOT / "bench"))
    import phone_model

    asm = phone_model.compile_asm(tmp_path)
    for target, path in asm.items():
        regs = phone_model.regions(path, "#" if target == "x86" else "//")
        assert len(regs) > 20, target
        for name, body in regs.items():
            assert body and not any(phone_model.CALL.match(i) for i in body), (target, name)
