"""bench/decode_ukernels.py: the harness builds against the real micro-kernels, times every one,
encodes with our encoder (θ 0 keeps every element, a huge θ only the sink) and refuses bad input."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "decode_ukernels.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT)


def test_rows_sum_the_kernels_and_follow_theta():
    r = run("--shapes", "smollm2-135m", "--keys", "128", "--reps", "1", "--theta", "0", "3e38", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["theta"] for x in rows] == [0.0, 3e38]
    every, floor = rows
    assert every["nnz_per_key"] == 64.0 and every["s_m"] == 0.0   # random-walk keys: no Δ is exactly 0
    assert floor["nnz_per_key"] == pytest.approx(64 / 128)      # only key 0 (the sink) is stored whole
    for x in rows:
        assert (x["rows"], x["head_dim"], x["kv_heads"]) == (3, 64, 3)
        for k in ("qkdot_ns", "deltaqkdot_ns", "softmax_ns", "pv_ns", "pv_f16v_ns"):
            assert x[k] > 0
        assert x["delta_f16v_ns"] == pytest.approx(x["deltaqkdot_ns"] + x["softmax_ns"] + x["pv_f16v_ns"])
        assert x["ratio_f32v"] == pytest.approx(x["delta_f32v_ns"] / x["dense_f32v_ns"])


def test_bad_input_is_one_clear_error():
    r = run("--keys", "100")
    assert r.returncode != 0 and "--keys must be a positive multiple of 64" in r.stderr
    assert "Traceback" not in r.stderr
