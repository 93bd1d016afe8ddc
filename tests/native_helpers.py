"""Running the native runner (x86-64 directly, arm64 under qemu-aarch64-static) and the Python
runtime on the same program and ids, call by call."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List, Sequence

import numpy as np

QEMU = "qemu-aarch64-static"


def native_cmd(binary: Path, abi: str) -> List[str]:
    return ([QEMU] if abi == "arm64-v8a" else []) + [str(binary)]


def run_native(binary: Path, abi: str, *args, timeout: float = 600, qemu_cpu: str = "") -> subprocess.CompletedProcess:
    """qemu_cpu (arm64): the core qemu emulates (QEMU_CPU), e.g. cortex-a72 (Armv8.0: no SDOT); default max."""
    env = {**os.environ, "QEMU_CPU": qemu_cpu or "max"} if abi == "arm64-v8a" else None
    return subprocess.run(native_cmd(binary, abi) + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def native_generate(binary: Path, abi: str, pte: Path, ids_file: Path, steps: int, tmp: Path, *extra):
    """(result JSON, logits [calls, vocab]) of `generate` with every call's last-position logits:
    the prefill's calls and `steps` decode calls (steps + 1 generated tokens)."""
    dump = tmp / f"logits_{abi}_{pte.stem}.f32"
    r = run_native(binary, abi, "generate", "--pte", pte, "--prompt-ids", ids_file, "--max-new-tokens", steps + 1,
                   "--ignore-eos", "--dump-logits", dump, *extra)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    return result, np.fromfile(dump, dtype=np.float32)


def python_generate(pte: Path, ids: Sequence[int], steps: int, forced: Sequence[int] = None):
    """The Python runtime on the same calls: prefill chunks from position 0, then greedy decode
    (or decode step i fed forced[i]). Returns (logits [calls, vocab], kernel counters or None)."""
    import torch

    from export.runtime import PteModel, load_kernel_libraries

    load_kernel_libraries()
    from delegates import stats

    model = PteModel(pte)
    max_seq = int(model.metadata("get_max_seq_len"))
    stats.reset()
    outs, pos, t = [], 0, torch.tensor([list(ids)])
    while pos < len(ids):
        chunk = t[:, pos: pos + max_seq]
        logits = model.forward(chunk, pos)
        outs.append(logits.reshape(-1, logits.shape[-1])[-1].float())
        pos += chunk.shape[1]
    tok = int(outs[-1].argmax())
    for i in range(steps):
        tok = int(forced[i]) if forced is not None else tok
        logits = model.forward(torch.tensor([[tok]]), pos)
        outs.append(logits.reshape(-1, logits.shape[-1])[-1].float())
        pos += 1
        tok = int(outs[-1].argmax())
    s = stats.summary()
    counted = s if (s["prefill"]["layers"] or s["decode"]["layers"]) else None
    return torch.stack(outs).numpy(), counted


def big_tokenizer():
    """A byte-level BPE tokenizer whose ids go past a tiny model's 512-token vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from device.prompts import DEFAULT_PASSAGE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator([DEFAULT_PASSAGE.read_text()] * 4,
                            trainers.BpeTrainer(vocab_size=1200, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok
