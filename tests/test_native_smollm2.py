"""The real SmolLM2-135M 8da8w program in the native runners: the same greedy tokens as the Python
runtime over a real 128-token prompt + 16 decode steps, and a chat answer through the phone path.

Quantized programs are compared by argmax, not tight logits: dynamic int8 activation rounding
differs between builds and CPUs (max abs logit diff ~3 on this model, see
../shared/native-build-facts.md), which a greedy token sequence tolerates only when each step's
top-1 is not a near tie; the prompt is real English text, where it is not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.cli import main
from device.keys import ensure_key
from device.prompts import DEFAULT_PASSAGE, load_tokenizer, text_ids, write_ids
from device.virtual import VirtualDevice
from tests.native_helpers import native_generate, python_generate

pytestmark = pytest.mark.smollm2
STEPS = 16
# Cross-build noise of this 8da8w program: max abs logit diff ~2 over the vocabulary per call
# (measured 2.1 arm64/qemu, 2.3 x86-64 native vs the Python runtime), much less on any one pair of
# logits: teacher-forced, the only argmax flip seen had a lead of 0.27. A lead <= NEAR_TIE is a tie.
NEAR_TIE = 0.5


def _prompt(smollm2_8da8w, tmp_path):
    out, m = smollm2_8da8w
    ids = text_ids(load_tokenizer(out / "tokenizer.json"), DEFAULT_PASSAGE.read_text(), 128)
    return out / m["pte"], ids, write_ids(ids, tmp_path / "ids.bin")


def _gaps(logits):
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _check(runners, abi, smollm2_8da8w, tmp_path):
    """Greedy: the same tokens as the Python runtime, or a divergence at a near tie (after which the
    contexts differ). Teacher-forced with the Python's tokens, so every call sees the same context:
    the same argmax wherever the lead exceeds NEAR_TIE, one of the top two elsewhere, cosine >= 0.97."""
    pte, ids, ids_file = _prompt(smollm2_8da8w, tmp_path)
    py, _ = python_generate(pte, ids, STEPS)
    want = [int(x) for x in py.argmax(1)]
    greedy, _ = native_generate(runners[abi], abi, pte, ids_file, STEPS, tmp_path, "--threads", "2")
    gaps = _gaps(py)
    diverged = next((i for i, (a, b) in enumerate(zip(greedy["tokens"], want)) if a != b), None)
    assert len(greedy["tokens"]) == len(want)
    assert diverged is None or gaps[diverged] <= NEAR_TIE, (diverged, gaps[diverged])
    forced = write_ids(want[:STEPS], tmp_path / "forced.bin")
    _, flat = native_generate(runners[abi], abi, pte, ids_file, STEPS, tmp_path, "--threads", "2",
                              "--forced-tokens", forced)
    nat = flat.reshape(py.shape)
    top2 = np.argsort(py, axis=1)[:, -2:]
    for i in range(len(want)):
        if gaps[i] > NEAR_TIE:
            assert int(nat[i].argmax()) == want[i], (i, gaps[i])
        else:
            assert int(nat[i].argmax()) in top2[i], (i, gaps[i])
    assert float(_cosine(nat, py).min()) >= 0.97
    return greedy, want


def test_x86_64_native_same_greedy_tokens(runners, smollm2_8da8w, tmp_path):
    greedy, want = _check(runners, "x86_64", smollm2_8da8w, tmp_path)
    assert greedy["tokens"] == want                 # all 17 greedy tokens on this machine's CPU
    assert greedy["peak_rss_mb"] < 600              # the model's own memory: no interpreter, no torch


@pytest.mark.slow
def test_arm64_native_under_qemu_same_tokens(runners, smollm2_8da8w, tmp_path):
    _check(runners, "arm64-v8a", smollm2_8da8w, tmp_path)


@pytest.mark.slow
def test_generate_answers_paris_on_the_virtual_phone(runners, smollm2_8da8w, tmp_path, capsys):
    out, m = smollm2_8da8w
    key = ensure_key(tmp_path / "adbkey")
    with VirtualDevice(tmp_path / "dev", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                       accept_new_keys=False, max_lifetime_s=1200) as dev:
        code = main(["generate", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--prompt", "What is the capital of France?", "--max-new-tokens", "24", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["abi"] == "arm64-v8a" and "Paris" in result["text"], result["text"]
