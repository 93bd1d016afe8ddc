"""Decode attention over every cache format, against its roofline, in one run.

    python bench/attention_formats.py [--shapes smollm2-135m llama-3.2-1b] [--context 1024 2048 4096]
                                      [--threads 1 2] [--formats fp32 fp16 q8_0 q4_0] [--reps 3] [--json]

One decode token at each context after a prefill of the rest, timed natively (bench/decode_step.cc
over the core's C API, as the runtime calls it) for our dense kernel with K and V caches in each
format (`attention.k_cache` = `attention.v_cache`), in two modes: warm (one layer's state, stepped
over and over: it stays in the CPU caches, so the time is the kernel's arithmetic) and streamed (one
state per layer of the model, stepped in turn as a decode step does: the caches come from memory).
The host's read bandwidth is measured in the same run at each thread count (bench/membw.cc).

Per streamed row: the state a step reads (every K and V row of the context), its rate in GB/s and
as a fraction of the measured bandwidth, and the kernel's roofline — the larger of bytes / bandwidth
(memory) and the warm time (arithmetic: the same step with the state in cache) — with the measured
time as a multiple of it and which bound sets it. ratio = ms / dense fp16 K+V ms (same shape,
context, threads, mode). Progress on stderr; a markdown table (or JSON rows) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from attention import LAYERS, SHAPES, decode_step, synthetic_inputs  # noqa: E402

FORMATS = ("fp32", "fp16", "q8_0", "q4_0")
KIND = {"fp32": "dense", "fp16": "dense_f16k", "q8_0": "dense_q8_0k", "q4_0": "dense_q4_0k"}


@dataclass
class Row:
    shape: str
    context: int
    threads: int
    format: str            # K and V cache format
    bytes_per_token: int   # K + V bytes per token, one layer (all kv heads)
    warm_ms: float         # one layer, state in cache
    streamed_ms: float     # per layer, one state per model layer in turn
    ratio_warm: float      # vs dense fp16 K+V, same mode
    ratio_streamed: float
    gb_per_s: float        # streamed: state bytes / time
    bandwidth_gb_per_s: float   # the host's read bandwidth at these threads, this run
    of_bandwidth: float
    roofline_ms: float
    bound: str             # memory | compute
    of_roofline: float     # streamed_ms / roofline_ms (1 = at the roofline)
    arch: str


def membw(threads: int, mb: int = 1024, reps: int = 5) -> float:
    from cxx_cache import cached_exe

    exe = cached_exe("membw", [ROOT / "bench" / "membw.cc"], [], ["-march=native", "-lpthread"])
    r = subprocess.run([str(exe), str(mb), str(threads), str(reps)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["gb_per_s"]


def rows_for(shape: str, ctx: int, threads: int, formats, reps: int, bw: float, tmp: Path):
    h, hkv, d = SHAPES[shape]
    q, k, v = synthetic_inputs(ctx, h, hkv, d)
    fd, qkv = tempfile.mkstemp(dir=tmp, suffix=".f32")
    os.close(fd)
    torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)]).numpy().tofile(qkv)
    res = {}
    for fmt in formats:
        print(f"{shape} ctx {ctx} threads {threads} {fmt} ...", file=sys.stderr)
        warm = decode_step(KIND[fmt], fmt, ctx, h, hkv, d, 1, threads, reps, 0.0, 0.0, Path(qkv))
        streamed = decode_step(KIND[fmt], fmt, ctx, h, hkv, d, LAYERS[shape], threads, reps, 0.0, 0.0, Path(qkv))
        res[fmt] = (warm, streamed)
    os.unlink(qkv)
    base_w, base_s = res.get("fp16", next(iter(res.values())))
    for fmt, (warm, streamed) in res.items():
        nbytes = streamed["kv_bytes"]
        mem_ms = nbytes / (bw * 1e9) * 1e3
        roof = max(mem_ms, warm["ms"])
        yield Row(shape, ctx, threads, fmt, int(nbytes / (ctx - 1)), warm["ms"], streamed["ms"],
                  warm["ms"] / base_w["ms"], streamed["ms"] / base_s["ms"], nbytes / (streamed["ms"] * 1e6), bw,
                  nbytes / (streamed["ms"] * 1e6) / bw, roof, "memory" if mem_ms >= warm["ms"] else "compute",
                  streamed["ms"] / roof, streamed["arch"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--context", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if any(c < 2 for c in ns.context):
        ap.error("--context values must be >= 2")
    bws = {t: membw(t) for t in ns.threads}
    print(f"read bandwidth: " + ", ".join(f"{t} thread(s) {b:.1f} GB/s" for t, b in bws.items()), file=sys.stderr)
    rows = []
    if not ns.json:
        print("| shape | context | threads | K+V format | B/token/layer | warm ms | streamed ms | ratio warm | "
              "ratio streamed | GB/s | of bandwidth | roofline ms | bound | of roofline |")
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in ns.shapes:
            for ctx in ns.context:
                for t in ns.threads:
                    for r in rows_for(shape, ctx, t, ns.formats, ns.reps, bws[t], Path(tmp)):
                        rows.append(r)
                        if not ns.json:
                            print(f"| {r.shape} | {r.context} | {r.threads} | {r.format} | {r.bytes_per_token} | "
                                  f"{r.warm_ms:.3f} | {r.streamed_ms:.3f} | {r.ratio_warm:.2f} | {r.ratio_streamed:.2f} | "
                                  f"{r.gb_per_s:.1f} | {r.of_bandwidth:.0%} | {r.roofline_ms:.3f} | {r.bound} | "
                                  f"{r.of_roofline:.2f} |", flush=True)
    if ns.json:
        print(json.dumps({"bandwidth_gb_per_s": bws, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
