"""Calibration files: key scales leave the dense model unchanged and move the thresholds;
the calibrate command writes a file that export and evaluation read; bad files exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from delegates import stats
from export.calibration import DeltaCalibration, load_calibration, scales_from_query_rms
from export.cli import main as export_main
from export.config import load_config
from export.errors import ConfigError
from export.evaluate.cli import main as eval_main
from export.pipeline import build_model
from export.sources import load_source

TINY = "tiny_llama.yaml"
IDS = [1] + [3 + (7 * i * i + 3 * i) % 250 for i in range(95)]


def logits(cfg, cal=None):
    src = load_source(cfg)
    model = build_model(cfg, src, cal).model
    stats.reset()
    with torch.no_grad():
        out = model(torch.tensor([IDS]), torch.tensor([0]))
    return out, stats.summary()["prefill"]["total"]


def tiny_cal(scales, thetas=None) -> DeltaCalibration:
    return DeltaCalibration(2, 2, 16, key_scales=scales, theta_per_layer=thetas)


def random_scales(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 2, 8, generator=g) * 3 + 0.2).tolist()


def test_key_scales_leave_exact_attention_unchanged():
    cfg = load_config(TINY, ["attention.kind=delta", "attention.theta=0", "export.full_logits=true"])
    plain, _ = logits(cfg)
    scaled, _ = logits(cfg, tiny_cal(random_scales()))
    assert plain.abs().max() > 1.0
    assert (plain - scaled).abs().max() <= 1e-5 * plain.abs().max()


def test_uniform_key_scale_equals_a_smaller_theta():
    # keys × 2 with θ is keys with θ / 2: the kernel sees the same zero pattern.
    base = ["attention.kind=delta", "attention.gamma=0.1", "export.full_logits=true"]
    half, s_half = logits(load_config(TINY, base + ["attention.theta=0.15"]))
    twice, s_twice = logits(load_config(TINY, base + ["attention.theta=0.3"]), tiny_cal([[[2.0] * 8] * 2] * 2))
    assert 0.05 < s_half["s_m"] < 0.95
    assert s_twice["s_m"] == pytest.approx(s_half["s_m"], abs=1e-9)
    assert (half - twice).abs().max() <= 1e-4 * half.abs().max()


def test_calibration_theta_per_layer_is_used():
    cfg = load_config(TINY, ["attention.kind=delta", "attention.theta=5"])
    model = build_model(cfg, load_source(cfg), tiny_cal(None, [0.25, 0.5])).model
    assert [layer.self_attn.core.theta for layer in model.model.layers] == [0.25, 0.5]


def test_scales_have_geometric_mean_one_per_layer():
    ms = torch.rand(3, 2, 8, dtype=torch.float64) * 10 + 0.1
    s = scales_from_query_rms(ms, 0.5).double()
    assert torch.allclose(s.log().mean(dim=(1, 2)), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.equal(scales_from_query_rms(ms, 0.0), torch.ones(3, 2, 8))
    ratio = (s[0, 0, 0] / s[0, 0, 1]).item()       # s ∝ rms^0.5 = ms^0.25
    assert ratio == pytest.approx((ms[0, 0, 0] / ms[0, 0, 1]).item() ** 0.25, rel=1e-5)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The real calibrate command on the tiny model, then an export that reads its file."""
    d = tmp_path_factory.mktemp("calibrated")
    cal = d / "cal.json"
    code = eval_main(["calibrate", "--config", TINY, "attention.gamma=0.1", "--target-s-c", "0.4",
                      "--alpha", "0.5", "--paragraphs", "2", "--out", str(cal), "-q"])
    assert code == 0
    code = export_main(["--config", TINY, "-q", f"output.dir={d / 'pte'}", "attention.kind=delta",
                        "attention.gamma=0.1", f"attention.calibration={cal}", "export.full_logits=true",
                        "export.max_context_len=512", "export.max_seq_len=128"])
    assert code == 0
    return cal, json.loads((d / "pte" / "tiny_llama.json").read_text()), d / "pte"


def test_calibrate_command_writes_scales_and_thetas(calibrated):
    cal_path, _, _ = calibrated
    cal = load_calibration(str(cal_path))
    assert (cal.n_layers, cal.n_kv_heads, cal.head_dim) == (2, 2, 16)
    s = torch.tensor(cal.key_scales)
    assert s.shape == (2, 2, 8) and s.min() < 1.0 < s.max()     # not all ones: from the queries
    assert len(cal.theta_per_layer) == 2 and cal.calibration_s_c >= 0.4
    assert cal.alpha == 0.5 and cal.gamma == 0.1 and len(cal.curves) == 2


def test_export_with_calibration_records_it_and_matches_eager(calibrated, capsys):
    cal_path, manifest, out = calibrated
    rec = manifest["calibration"]
    assert rec["key_scales"] and rec["theta_per_layer"] == load_calibration(str(cal_path)).theta_per_layer
    assert rec["sha256"] and manifest["validation"]["passed"]
    code = eval_main(["run", "--pte", str(out / "tiny_llama.pte"), "--backend", "both", "--tasks", "piqa",
                      "--limit", "6", "--format", "json", "-q"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["backend"] for r in rows} == {"eager", "pte"}
    for r in rows:
        assert "per-layer" in r["setting"] and "keys α0.5" in r["setting"]
        assert r["theta_per_layer"] == rec["theta_per_layer"]
    eager, pte = sorted(rows, key=lambda r: r["backend"])
    assert pte["samples"] == eager["samples"] and len(pte["samples"]) == 6
    assert 0.0 < pte["prefill_s_c"] == pytest.approx(eager["prefill_s_c"], abs=1e-9)
    assert pte["prefill_s_c"] == pytest.approx(eager["prefill_s_c"], abs=1e-9)


def test_bitnet_key_scales_stay_ternary_and_lossless(tmp_path):
    cal = DeltaCalibration(2, 1, 16, key_scales=(torch.rand(2, 1, 8) + 0.5).tolist())
    cal.save(tmp_path / "cal.json")
    code = export_main(["--config", "tiny_bitnet.yaml", "-q", f"output.dir={tmp_path / 'o'}", "attention.kind=delta",
                        "attention.theta=0.3", f"attention.calibration={tmp_path / 'cal.json'}"])
    assert code == 0
    check = json.loads((tmp_path / "o" / "tiny_bitnet.json").read_text())["quantization"]["ternary_check"]
    assert check["bit_exact_layers"] == check["layers"] == 14
    assert set(check["stored_int_values"]) <= {-1, 0, 1}


BAD_FILES = [
    ("missing", None, "no such file"),
    ("not_json", "{oops", "is not JSON"),
    ("wrong_format", json.dumps({"format": "other"}), "is not a calibration file"),
    ("other_model", json.dumps(DeltaCalibration(3, 2, 16).to_dict()), "made for (layers, kv heads, head dim)"),
    ("bad_shape", json.dumps(tiny_cal([[[1.0] * 7] * 2] * 2).to_dict()), "key_scales must be [2][2][8]"),
    ("non_positive", json.dumps(tiny_cal([[[0.0] * 8] * 2] * 2).to_dict()), "finite and > 0"),
    ("theta_count", json.dumps(tiny_cal(None, [0.5]).to_dict()), "theta_per_layer needs 2"),
]


@pytest.mark.parametrize("case,text,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_calibration_file_exits_2_and_writes_nothing(tmp_path, capsys, case, text, message):
    path = tmp_path / "cal.json"
    if text is not None:
        path.write_text(text)
    code = export_main(["--config", TINY, f"output.dir={tmp_path / 'o'}", "attention.kind=delta",
                        f"attention.calibration={path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: attention.calibration") and message in err[0], err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("overrides,message", [
    (["attention.calibration=x.json"], "is for attention.kind=delta"),
    (["attention.kind=delta", "attention.calibration=x.json", "attention.theta_per_layer=[1,1]"], "not both"),
])
def test_impossible_calibration_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(TINY, overrides)
    assert e.value.field == "attention.calibration"


def test_calibrate_needs_something_to_do(tmp_path, capsys):
    code = eval_main(["calibrate", "--config", TINY, "--alpha", "0", "--out", str(tmp_path / "c.json"), "-q"])
    assert code == 2 and "nothing to calibrate" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
