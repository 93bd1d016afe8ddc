"""On-device Python runner (embedded Linux boards with Python, and the virtual device).

    python -m device.runner --pte M.pte --out result.json --prompt-lengths 32 128 --decode-lengths 16 \\
        [--prompt-ids ids.bin] [--warmup 1] [--reps 3] [--threads N]

The same command line and result schema as the native runner (device/native, `deltallm_runner
bench`), for boards that have Python. Prompt ids: little-endian int32 (device/prompts.py makes
them from real text); without --prompt-ids, seeded random ids.

Runs the ExecuTorch runtime with our kernel library. For every prompt length x decode length:
warm-up, then repetitions of a fresh sequence (prefill from position 0, then greedy decode),
timing load, time to first token, prefill and decode throughput, and reading the delta kernel's
sparsity counters when the program uses delta attention. Writes the JSON atomically, then
the completion marker (`<out>` with suffix .done, content "ok"). Exit code 0 on success.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

PROTOCOL = "deltallm-bench/2"     # 2: runner, abi; prompt ids from a file; peak_rss_mb of the runner process
ABI = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "x86_64": "x86_64", "amd64": "x86_64"}


def _prompt(n: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(n)
    return torch.randint(3, max(4, vocab), (1, n), generator=g)


def run(ns) -> dict:
    import torch

    t0 = time.perf_counter()
    from export.runtime import PteModel, load_kernel_libraries

    load_kernel_libraries()
    if ns.threads:
        torch.set_num_threads(ns.threads)
    model = PteModel(Path(ns.pte))
    load_ms = model.load_s * 1e3                      # program load (the runtime's own)
    startup_ms = (time.perf_counter() - t0) * 1e3     # interpreter imports + program load
    vocab = int(model.metadata("get_vocab_size"))
    max_seq = int(model.metadata("get_max_seq_len"))
    try:
        from delegates import stats
    except ImportError:
        stats = None
    file_ids = None
    if ns.prompt_ids:
        from device.prompts import read_ids

        file_ids = read_ids(Path(ns.prompt_ids))
        if len(file_ids) < max(ns.prompt_lengths):
            raise SystemExit(f"error: {ns.prompt_ids} has {len(file_ids)} ids; prompt length "
                             f"{max(ns.prompt_lengths)} needs more")
    configs = []
    for p in ns.prompt_lengths:
        for d in ns.decode_lengths:
            ids = _prompt(p, vocab) if file_ids is None else torch.tensor([file_ids[:p]])
            samples = {"ttft_ms": [], "prefill_tps": [], "decode_tps": []}
            sparsity = None
            for rep in range(ns.warmup + ns.reps):
                measured = rep >= ns.warmup
                if stats is not None and measured and rep == ns.warmup:
                    stats.reset()
                t = time.perf_counter()
                pos, logits = 0, None
                while pos < p:
                    chunk = ids[:, pos: pos + max_seq]
                    logits = model.forward(chunk, pos)
                    pos += chunk.shape[1]
                t_first = time.perf_counter()
                tok = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
                for _ in range(d):
                    logits = model.forward(torch.tensor([[tok]]), pos)
                    tok = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
                    pos += 1
                t_end = time.perf_counter()
                if measured:
                    samples["ttft_ms"].append((t_first - t) * 1e3)
                    samples["prefill_tps"].append(p / (t_first - t))
                    samples["decode_tps"].append(d / (t_end - t_first) if d else 0.0)
                if stats is not None and measured and rep == ns.warmup:
                    s = stats.summary()
                    if s["prefill"]["layers"] or s["decode"]["layers"]:
                        sparsity = s
            configs.append({"prompt_tokens": p, "decode_tokens": d, "samples": samples, "sparsity": sparsity})
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import platform

    return {"protocol": PROTOCOL, "runner": "python", "abi": ABI.get(platform.machine().lower(), platform.machine()),
            "load_ms": load_ms, "startup_ms": startup_ms, "peak_rss_mb": rss_kb / 1024, "threads": torch.get_num_threads(),
            "configs": configs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pte", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt-lengths", type=int, nargs="+", default=[32])
    ap.add_argument("--decode-lengths", type=int, nargs="+", default=[16])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prompt-ids", help="little-endian int32 token ids (the first N for prompt length N)")
    ns = ap.parse_args(argv)
    result = run(ns)
    out = Path(ns.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)
    out.with_suffix(".done").write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
