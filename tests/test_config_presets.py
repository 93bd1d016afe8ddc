"""Shipped configs and presets: a preset names the config it changes with `base:`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from export.cli import main
from export.config import CONFIG_DIR, load_config

SHIPPED = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def _dotted(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        out += _dotted(value, f"{name}.") if isinstance(value, dict) else [f"{name}={json.dumps(value)}"]
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert cfg.name == Path(name).stem and cfg.output.dir.startswith("out/")


@pytest.mark.parametrize("name", [n for n in SHIPPED if "base" in (yaml.safe_load((CONFIG_DIR / n).read_text()) or {})])
def test_a_preset_is_its_base_with_its_own_keys_as_overrides(name):
    data = yaml.safe_load((CONFIG_DIR / name).read_text())
    base = data.pop("base")
    preset, by_hand = load_config(name).to_dict(), load_config(base, _dotted(data)).to_dict()
    assert preset.pop("name") == Path(name).stem and by_hand.pop("name") == Path(base).stem
    assert preset == by_hand
    assert preset["attention"]["kind"] == "delta" and preset["output"]["dir"] != load_config(base).output.dir


def test_smollm2_delta_preset_is_the_measured_compressed_state():
    a = load_config("smollm2_135m_delta").attention
    assert (a.kind.value, a.theta, a.gamma, a.w_decode, a.v_cache.value, a.dk_budget) == ("delta", 0.6, 0.1, 32, "fp16", 0.75)


def test_base_chain_merges_sections_resolves_paths_per_file_and_names_by_the_top_file(tmp_path, capsys):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir(), upper.mkdir()
    (lower / "m.gguf").write_bytes(b"")          # only the path is resolved here, nothing loads it
    (lower / "cal.json").write_text("{}")
    (lower / "root.yaml").write_text(
        "name: root_name\nmodel: {kind: gguf, path: m.gguf, architecture: llama}\n"
        "attention: {kind: delta, theta: 0.3, calibration: cal.json}\nexport: {max_context_len: 256, max_seq_len: 64}\n")
    (lower / "mid.yaml").write_text("base: root.yaml\nattention: {theta: 0.9, calibration: ''}\nexport: {max_seq_len: 32}\n")
    (upper / "top.yaml").write_text("base: ../lower/mid.yaml\nattention:\nquantization: {linear: 8da8w}\n")
    cfg = load_config(str(upper / "top.yaml"), ["export.max_seq_len=16"])
    assert cfg.name == "top"                                   # not the base's explicit name
    assert cfg.model.path == str((lower / "m.gguf").resolve())   # relative to the file that names it
    assert (cfg.attention.kind.value, cfg.attention.theta, cfg.attention.calibration) == ("delta", 0.9, "")
    assert (cfg.export.max_context_len, cfg.export.max_seq_len, cfg.quantization.linear.value) == (256, 16, "8da8w")
    assert load_config(str(lower / "root.yaml")).attention.calibration == str((lower / "cal.json").resolve())
    assert main(["--config", str(upper / "top.yaml"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "base" not in printed and printed["attention"]["theta"] == 0.9 and printed["name"] == "top"


def test_a_preset_may_name_a_shipped_config_from_anywhere(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: tiny_llama\nname: mine_tiny\nattention: {kind: delta, theta: 0.2}\n")
    cfg = load_config(str(tmp_path / "mine.yaml"))
    assert (cfg.name, cfg.arch.dim, cfg.attention.theta) == ("mine_tiny", load_config("tiny_llama").arch.dim, 0.2)


@pytest.mark.parametrize("preset,tiny", [("llama3_2_1b_delta", "tiny_llama.yaml"), ("bitnet_delta", "tiny_bitnet.yaml")])
def test_hub_presets_export_on_the_tiny_model_of_their_architecture(tmp_path, preset, tiny):
    """The hub presets need the network: their attention and quantization settings are exported on the tiny
    random model of the same architecture instead, validated in the ExecuTorch runtime (exit 0)."""
    from tests.conftest import export_with_cli

    want = load_config(preset).to_dict()
    manifest = export_with_cli(tiny, tmp_path, *_dotted({"attention": want["attention"],
                                                          "quantization": want["quantization"]}))
    assert manifest["config"]["attention"] == want["attention"]
    assert manifest["config"]["quantization"] == want["quantization"]
    assert manifest["config"]["model"]["architecture"] == want["model"]["architecture"]
    assert manifest["attention_state"]["ratio_to_dense_fp32_kv"] < 0.7   # fp16 V (0.57 here; fp32 V ~0.82)
