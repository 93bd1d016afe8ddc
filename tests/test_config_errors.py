"""Malformed input: every case exits 2 with one line naming the field, and writes nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write_gguf(path: Path, arch: str) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def truncated_gguf(path: Path) -> None:
    write_gguf(path, "llama")
    path.write_bytes(path.read_bytes()[:30])   # inside the first key


def run_cli(tmp_path: Path, capsys, *args: str):
    out = tmp_path / "out"
    code = main(["--config", *args[:1], f"output.dir={out}", *args[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, out


def write_yaml(tmp_path: Path, text: str) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


TINY = "tiny_llama.yaml"


def write_loop(tmp_path: Path) -> str:
    """cfg.yaml and other.yaml, each naming the other as its base."""
    (tmp_path / "other.yaml").write_text("base: cfg.yaml\n")
    return write_yaml(tmp_path, "base: other.yaml\n")


def then_tiny(_side_effect) -> str:
    return TINY

CASES = [
    # (id, config or callable(tmp_path) -> config, overrides, field named in the message)
    ("unknown_key", lambda t: write_yaml(t, "model: {kind: random, architecture: llama}\nquantization: {linar: 8da8w}\n"),
     [], "quantization.linar"),
    ("unknown_section_override", TINY, ["quantisation.linear=8da8w"], "quantisation"),
    ("wrong_type", TINY, ["export.max_context_len=abc"], "export.max_context_len"),
    ("wrong_bool_type", TINY, ["export.full_logits=maybe"], "export.full_logits"),
    ("bad_enum", TINY, ["quantization.linear=int3"], "quantization.linear"),
    ("context_len_zero", TINY, ["export.max_context_len=0"], "export.max_context_len"),
    ("context_len_negative", TINY, ["export.max_context_len=-5"], "export.max_context_len"),
    ("seq_len_over_context", TINY, ["export.max_seq_len=4096"], "export.max_seq_len"),
    ("ternary_on_llama", TINY, ["quantization.linear=ternary"], "quantization.linear"),
    ("8da8w_on_bitnet", "tiny_bitnet.yaml", ["quantization.linear=8da8w"], "quantization.linear"),
    ("quant_on_portable", TINY, ["quantization.linear=8da8w", "backend.kind=portable"], "quantization.linear"),
    ("bad_group_size", TINY, ["quantization.linear=8da4w", "quantization.group_size=48"], "quantization.group_size"),
    ("group_size_not_dividing", TINY, ["quantization.linear=8da4w", "quantization.group_size=128"],
     "quantization.group_size"),
    ("negative_theta", TINY, ["attention.theta=-0.5"], "attention.theta"),
    ("fp16_v_cache_on_custom_sdpa", TINY, ["attention.kind=dense", "attention.dense_kernel=custom_sdpa",
                                         "attention.v_cache=fp16"], "attention.v_cache"),
    ("fp16_k_cache_on_delta", TINY, ["attention.kind=delta", "attention.k_cache=fp16"], "attention.k_cache"),
    ("fp16_k_cache_on_custom_sdpa", TINY, ["attention.dense_kernel=custom_sdpa", "attention.k_cache=fp16"],
     "attention.k_cache"),
    ("bad_k_cache_dtype", TINY, ["attention.k_cache=bf16"], "attention.k_cache"),
    ("q8_0_k_cache_on_delta", TINY, ["attention.kind=delta", "attention.k_cache=q8_0"], "attention.k_cache"),
    ("q4_0_v_cache_on_custom_sdpa", TINY, ["attention.dense_kernel=custom_sdpa", "attention.v_cache=q4_0"],
     "attention.v_cache"),
    ("q8_0_k_cache_head_dim_16", TINY, ["attention.k_cache=q8_0"], "attention.k_cache"),    # tiny_llama: head_dim 16
    ("q4_0_v_cache_head_dim_16_delta", TINY, ["attention.kind=delta", "attention.v_cache=q4_0"], "attention.v_cache"),
    ("dk_budget_zero", TINY, ["attention.kind=delta", "attention.dk_budget=0"], "attention.dk_budget"),
    ("dk_budget_above_one", TINY, ["attention.kind=delta", "attention.dk_budget=1.5"], "attention.dk_budget"),
    ("dk_budget_on_dense", TINY, ["attention.dk_budget=0.7"], "attention.dk_budget"),
    ("bad_dense_kernel", TINY, ["attention.dense_kernel=flash"], "attention.dense_kernel"),
    ("bad_v_cache_dtype", TINY, ["attention.kind=delta", "attention.v_cache=int4"], "attention.v_cache"),
    ("kv_heads_not_dividing", TINY, ["arch.n_kv_heads=3"], "arch.n_kv_heads"),
    ("missing_gguf", TINY, ["model.kind=gguf", "model.path=/nonexistent/model.gguf"], "model.path"),
    ("not_a_gguf", lambda t: then_tiny((t / "fake.gguf").write_bytes(b"NOPE" + b"\0" * 64)),
     ["model.kind=gguf", "model.path={tmp}/fake.gguf"], "model.path"),
    ("gguf_unsupported_arch", lambda t: write_gguf(t / "gpt2.gguf", "gpt2") and TINY,
     ["model.kind=gguf", "model.path={tmp}/gpt2.gguf"], "model.path"),
    ("gguf_truncated", lambda t: then_tiny(truncated_gguf(t / "cut.gguf")),
     ["model.kind=gguf", "model.path={tmp}/cut.gguf"], "model.path"),
    ("local_folder_missing", TINY, ["model.kind=local", "model.path=/nonexistent/folder"], "model.path"),
    ("local_folder_without_config", lambda t: (t / "empty").mkdir() or TINY,
     ["model.kind=local", "model.path={tmp}/empty"], "model.path"),
    ("package_not_installed", TINY, ["model.kind=package", "model.path=no_such_pkg_xyz/m.gguf"], "model.path"),
    ("random_without_architecture", TINY, ["model.architecture=auto"], "model.architecture"),
    ("override_without_equals", TINY, ["quantization.linear"], "quantization.linear"),
    ("base_not_found", lambda t: write_yaml(t, "base: no_such_base.yaml\n"), [], "base"),
    ("base_not_a_name", lambda t: write_yaml(t, "base: [tiny_llama.yaml]\n"), [], "base"),
    ("base_loop", write_loop, [], "base"),
    ("base_bad_value_named_by_the_preset", lambda t: write_yaml(t, "base: tiny_llama.yaml\nattention: {dk_budget: 0.5}\n"),
     [], "attention.dk_budget"),
    ("config_not_found", "no_such_config.yaml", [], "--config"),
    ("config_not_yaml", lambda t: write_yaml(t, "model: [unclosed\n"), [], "--config"),
    ("theta_per_layer_length", TINY, ["attention.theta_per_layer=[0.5]"], "attention.theta_per_layer"),
    ("output_dir_is_file", lambda t: then_tiny((t / "afile").write_text("x")), ["output.dir={tmp}/afile"], "output.dir"),
    ("output_dir_under_a_file", lambda t: then_tiny((t / "afile").write_text("x")), ["output.dir={tmp}/afile/sub"],
     "output.dir"),
    # Not writable even for root (tests run as root here, where permission bits do not stop writes).
    ("output_dir_unwritable", TINY, ["output.dir=/sys/deltallm-out"], "output.dir"),
]


@pytest.mark.parametrize("case_id,config,overrides,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_exits_2_names_field_writes_nothing(tmp_path, capsys, case_id, config, overrides, field):
    cfg = config(tmp_path) if callable(config) else config
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    has_out_override = any(o.startswith("output.dir=") for o in overrides)
    argv = ["--config", cfg, *([] if has_out_override else [f"output.dir={out}"]), *overrides]
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, lines
    assert len(errors) == 1 and lines[-1] == errors[0], lines  # one error line, last
    assert errors[0].startswith(f"error: {field}"), errors[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "something was written"


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "export", "--config", TINY, "export.max_context_len=0",
                        f"output.dir={tmp_path}/o"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert r.stderr.strip() == "error: export.max_context_len: must be > 0, got 0"
    assert not (tmp_path / "o").exists()


def test_bare_config_name_resolves_from_any_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "bitnet.yaml", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert '"architecture": "bitnet"' in out and '"linear": "ternary"' in out
    assert main(["--config", "tiny_llama", "--print-config", "quantization.linear=8da4w"]) == 0
    assert '"linear": "8da4w"' in capsys.readouterr().out


def test_gguf_architecture_read_from_the_header_matches_gguf_reader(tmp_path):
    import gguf
    import numpy as np

    from export.sources import gguf_architecture

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")   # writes general.architecture first: move it behind other keys
    w.kv_data[0].pop("general.architecture")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hello", "wörld"])
    w.add_array("tokenizer.ggml.scores", [0.0, 0.5, 1.0, 2.0])
    w.add_uint32("llama.block_count", 1)
    w.add_string("general.architecture", "bitnet")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    field = gguf.GGUFReader(str(path)).fields["general.architecture"]
    assert gguf_architecture(path) == bytes(field.parts[field.data[0]]).decode() == "bitnet"
