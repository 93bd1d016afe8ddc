"""SmolLM2-135M with delta attention in the ExecuTorch runtime (slow: three real exports).

Run deliberately: python -m pytest -q -m slow tests/test_smollm2_delta.py
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import export_with_cli

pytestmark = pytest.mark.slow
FP32 = ("quantization.linear=fp32", "export.max_context_len=256", "export.max_seq_len=128")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = {}
    for name, extra in {"dense": ("attention.kind=dense",),
                        "delta": ("attention.kind=delta", "attention.theta=0.6", "attention.gamma=0.1",
                                  "attention.w_decode=4"),
                        "delta0": ("attention.kind=delta", "attention.theta=0.0")}.items():
        d = tmp_path_factory.mktemp(f"smollm2_{name}")
        out[name] = (d, export_with_cli("smollm2_135m.yaml", d, *FP32, *extra))
    return out


def _run(pte, ids, decode):
    from export.runtime import run_sequence

    return torch.stack(run_sequence(pte.forward, ids, decode, 128, forced=[ids[i % len(ids)] for i in range(decode)]))


def _paragraph_ids(tokenizer, n=128):
    from export.datasets import squad_paragraphs, squad_dev_path

    text = " ".join(squad_paragraphs(squad_dev_path())[:3])
    return tokenizer.encode(text).ids[:n]


def test_delta_program_prefill_128_decode_32_reports_per_layer_sparsity(programs, capsys):
    from tokenizers import Tokenizer

    from delegates import stats
    from export.runtime import PteModel

    d, m = programs["delta"]
    ids = _paragraph_ids(Tokenizer.from_file(str(d / "tokenizer.json")))
    assert len(ids) == 128
    pte = PteModel(d / m["pte"])
    stats.reset()
    _run(pte, ids, 32)
    s = stats.summary()
    assert len(s["prefill"]["layers"]) == 30 and len(s["decode"]["layers"]) == 30
    assert all(layer["calls"] == 32 for layer in s["decode"]["layers"])
    pre, dec = s["prefill"]["total"], s["decode"]["total"]
    assert 0.2 < pre["s_m"] < 0.8 and 0.1 < pre["s_c"] < pre["s_m"]
    assert 0.1 < dec["s_c"] < 0.9
    with capsys.disabled():
        print("\nSmolLM2 delta (theta 0.6, gamma 0.1, W_d 4), 128 prefill + 32 decode:",
              json.dumps({"prefill": pre, "decode": dec}, indent=None))
        for a, b in zip(s["prefill"]["layers"], s["decode"]["layers"]):
            print(f"  layer {a['layer']:2d}: prefill S_m {a['s_m']:.1%} S_c {a['s_c']:.1%} | "
                  f"decode S_m {b['s_m']:.1%} S_c {b['s_c']:.1%}")


def test_theta_zero_program_equals_dense_program(programs):
    from tokenizers import Tokenizer

    from export.runtime import PteModel

    d0, m0 = programs["delta0"]
    dd, md = programs["dense"]
    ids = _paragraph_ids(Tokenizer.from_file(str(d0 / "tokenizer.json")))
    a = _run(PteModel(d0 / m0["pte"]), ids, 8)
    b = _run(PteModel(dd / md["pte"]), ids, 8)
    assert (a - b).abs().max().item() <= 1e-3 * b.abs().max().item()
    assert torch.equal(a.argmax(-1), b.argmax(-1))
