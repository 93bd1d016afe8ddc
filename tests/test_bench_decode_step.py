"""bench/decode_step.cc, the native decode-step timer of bench/attention.py: it runs the same core
as the eager op (same output, same counters) for dense over every K cache format and delta, every V
cache format, and refuses bad input with one clear error."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from attention import Delta, decode_step, synthetic_inputs  # noqa: E402

CTX, H, HKV, D, GAMMA = 300, 6, 2, 64, 0.05   # > DLM_CKPT_STRIDE keys: the decode step splits its keys


@pytest.fixture(scope="module")
def qkv(tmp_path_factory):
    q, k, v = synthetic_inputs(CTX, H, HKV, D, seed=3)
    path = tmp_path_factory.mktemp("decode_step") / "qkv.f32"
    torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)]).numpy().tofile(path)
    return q, k, v, path


def run_native(kind, v_fp16, theta, path, out):
    res = decode_step(kind, v_fp16, CTX, H, HKV, D, 2, 1, 1, theta, GAMMA, path, out)
    return res, torch.from_numpy(np.fromfile(out, dtype=np.float32)).reshape(1, 1, H, D)


@pytest.mark.parametrize("v_fp16", [False, True, "q8_0", "q4_0"])
@pytest.mark.parametrize("kind,theta", [("dense", 0.0), ("dense_f16k", 0.0), ("dense_q8_0k", 0.0), ("dense_q4_0k", 0.0),
                                        ("delta", 0.3)])
def test_native_step_is_the_ops_step(qkv, tmp_path, kind, theta, v_fp16):
    from delegates import formats, op, stats  # noqa: F401

    q, k, v, path = qkv
    res, out = run_native(kind, v_fp16, theta, path, tmp_path / "out.f32")
    vt = formats.as_format(v_fp16 if isinstance(v_fp16, str) else (torch.float16 if v_fp16 else torch.float32))
    assert res["kind"] == kind and res["v_format"] == vt.label and res["ms"] > 0 and res["sweeps"] == 1
    assert res["v_fp16"] == int(vt == formats.Format.FP16)
    last = CTX - 1
    if kind.startswith("dense"):
        kt = {"dense": "fp32", "dense_f16k": "fp16", "dense_q8_0k": "q8_0", "dense_q4_0k": "q4_0"}[kind]
        assert res["k_format"] == kt
        assert res["kv_bytes"] == (CTX - 1) * HKV * (formats.row_bytes(formats.as_format(kt), D) + formats.row_bytes(vt, D))
        kc, vc = formats.empty_cache(formats.as_format(kt), CTX, HKV, D), formats.empty_cache(vt, CTX, HKV, D)
        torch.ops.deltallm.dense_attention(q[:, :-1], k[:, :-1], v[:, :-1], kc, vc, 0)
        want = torch.ops.deltallm.dense_attention(q[:, -1:], k[:, -1:], v[:, -1:], kc, vc, last)
        assert res["decode_s_c"] == 0.0
    else:
        delta = Delta(CTX, HKV, D, GAMMA, vt)
        delta(q[:, :-1], k[:, :-1], v[:, :-1], 0, theta, GAMMA)
        stats.reset()
        want = delta(q[:, -1:], k[:, -1:], v[:, -1:], last, theta, GAMMA)
        s_c = stats.summary()["decode"]["total"]["s_c"]
        assert 0.2 < s_c < 1.0 and res["decode_s_c"] == pytest.approx(s_c, abs=1e-12)
    assert torch.equal(out, want)   # the same core on the same inputs: bit for bit


def test_bad_input_is_one_clear_error(qkv, tmp_path):
    with pytest.raises(SystemExit, match="QKV must hold"):
        decode_step("delta", True, CTX + 1, H, HKV, D, 1, 1, 1, 0.3, GAMMA, qkv[3])
    with pytest.raises(SystemExit, match="KIND must be dense, dense_f16k, dense_q8_0k, dense_q4_0k or delta"):
        decode_step("sparse", True, CTX, H, HKV, D, 1, 1, 1, 0.3, GAMMA, qkv[3])
    with pytest.raises(SystemExit, match="V_FORMAT must be fp32, fp16, q8_0 or q4_0, got 'q5_1'"):
        decode_step("dense", "q5_1", CTX, H, HKV, D, 1, 1, 1, 0.0, GAMMA, qkv[3])
    with pytest.raises(SystemExit, match="multiple of 32"):
        decode_step("dense_q8_0k", "fp16", CTX, H, HKV, 72, 1, 1, 1, 0.0, GAMMA, qkv[3])
    with pytest.raises(SystemExit, match="THREADS out of range"):
        decode_step("dense", True, CTX, H, HKV, D, 1, 1000, 1, 0.0, GAMMA, qkv[3])
