"""Shared fixtures: exported programs are built once per session and shared."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import export_cache

export_cache.remember_loaded_sources()   # before the test modules import export/ and delegates/

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def export_with_cli(config: str, out_dir: Path, *overrides: str) -> dict:
    """Run the real CLI entry point in-process; return the written manifest. An export of the same
    sources, packages, config and overrides by an earlier test session is reused (tests/export_cache.py)."""
    from tests.export_cache import cached_export

    def export(folder: Path) -> dict:
        from export.cli import main

        code = main(["--config", config, "-q", f"output.dir={folder}", *overrides])
        assert code == 0, f"export of {config} failed with exit code {code}"
        manifests = [p for p in folder.glob("*.json") if p.name != "tokenizer.json"]
        assert len(manifests) == 1
        return json.loads(manifests[0].read_text())

    return cached_export(config, out_dir, overrides, export)


@pytest.fixture(scope="session")
def tiny_llama_fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llama_fp32")
    return out, export_with_cli("tiny_llama.yaml", out)


@pytest.fixture(scope="session")
def tiny_llama_dense_f16kv(tmp_path_factory):
    """The dense program with fp16 K and V caches (our kernel's exact path)."""
    out = tmp_path_factory.mktemp("tiny_llama_dense_f16kv")
    return out, export_with_cli("tiny_llama.yaml", out, "attention.v_cache=fp16", "attention.k_cache=fp16")


@pytest.fixture(scope="session")
def tiny_llama_8da8w(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llama_8da8w")
    return out, export_with_cli("tiny_llama.yaml", out, "quantization.linear=8da8w", "quantization.embedding=int8")


@pytest.fixture(scope="session")
def tiny_llama_8da4w(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llama_8da4w")
    return out, export_with_cli("tiny_llama.yaml", out, "quantization.linear=8da4w", "quantization.group_size=32",
                                "quantization.embedding=int4", "quantization.embedding_group_size=32")


@pytest.fixture(scope="session")
def tiny_bitnet(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_bitnet")
    return out, export_with_cli("tiny_bitnet.yaml", out)


@pytest.fixture(scope="session")
def smollm2_8da8w(tmp_path_factory):
    """The real SmolLM2-135M export (a few minutes). Reuses SMOLLM2_PTE_DIR if set."""
    pre = os.environ.get("SMOLLM2_PTE_DIR")
    if pre and (Path(pre) / "smollm2_135m.json").is_file():
        out = Path(pre)
        return out, json.loads((out / "smollm2_135m.json").read_text())
    out = tmp_path_factory.mktemp("smollm2")
    return out, export_with_cli("smollm2_135m.yaml", out)


@pytest.fixture(scope="session")
def tiny_llama_delta_budget(tmp_path_factory):
    """The delta program with an fp16 V cache and a ΔK stream budgeted at a quarter of head_dim per key
    (θ 0.1: it binds on the random model's keys, which store 67 % of their elements without it)."""
    out = tmp_path_factory.mktemp("tiny_llama_delta_budget")
    return out, export_with_cli("tiny_llama.yaml", out, *DELTA_BUDGET)


DELTA_BUDGET = ("attention.kind=delta", "attention.theta=0.1", "attention.gamma=0.1", "attention.w_decode=4",
                "attention.v_cache=fp16", "attention.dk_budget=0.25")


@pytest.fixture(scope="session")
def tiny_llama_delta(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llama_delta")
    return out, export_with_cli("tiny_llama.yaml", out, "attention.kind=delta", "attention.theta=0.3",
                                "attention.gamma=0.1", "attention.w_decode=4")


@pytest.fixture(scope="session")
def tiny_llama_delta_theta0(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llama_delta_theta0")
    return out, export_with_cli("tiny_llama.yaml", out, "attention.kind=delta", "attention.theta=0.0")


@pytest.fixture(scope="session")
def runners():
    """The native runners of the current sources, by ABI (install.sh builds them; a cache miss
    builds here, which takes minutes)."""
    from device.native_build import build_runner

    return {abi: Path(build_runner(abi).binary) for abi in ("x86_64", "arm64-v8a")}
