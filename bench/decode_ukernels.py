"""Per-key time of each decode micro-kernel, cache-resident: where a decode step's time goes.

    python bench/decode_ukernels.py [--shapes smollm2-135m llama-3.2-1b] [--keys 2048]
                                    [--theta 0.3 0.6 3e38] [--reps 50] [--json]

Builds bench/decode_ukernels.cc against this machine's micro-kernels (AVX2 + FMA + F16C on
x86-64, NEON on arm64; the library's own sources, the same flags as `delegates.build`) and times,
per key of one kv head: the exact scores of the decode tile (`qkdot`, fp32 K), the ΔK scores
(`deltaqkdot`, keys encoded at each θ by our encoder), the tile's softmax and P·V with fp32 and
fp16 V. The last columns add them up the way a decode step does: delta = ΔK scores + softmax +
P·V, dense = exact scores + softmax + P·V (same V), and their ratio in the same run. Warm: one
kv head's state is swept repeatedly and stays in the caches that hold it (L2 for SmolLM2's shape;
the Llama shape's 8 kv heads stride K and V over 4 MB at 2048 keys), so it bounds the arithmetic
of `bench/attention.py`'s streamed rows, not their time. θ = 3e38 keeps no ΔK non-zero (the floor). Progress on stderr, a markdown table (or, with
--json, a JSON list) on stdout.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "delegates" / "csrc"
sys.path.insert(0, str(ROOT / "bench"))

from cxx_cache import cached_exe  # noqa: E402

SHAPES = {"smollm2-135m": dict(rows=3, head_dim=64, kv_heads=3), "llama-3.2-1b": dict(rows=4, head_dim=64, kv_heads=8)}


def build() -> Path:
    arch = platform.machine()
    if arch in ("x86_64", "AMD64"):
        src, flags = "f32_deltaattn_avx2.cc", ["-mavx2", "-mfma", "-mf16c"]
    elif arch in ("aarch64", "arm64"):
        src, flags = "f32_deltaattn_neon.cc", []
    else:
        raise SystemExit(f"error: no SIMD micro-kernels for {arch} (x86-64 and arm64 have them)")
    sources = [ROOT / "bench" / "decode_ukernels.cc", CSRC / "ukernels" / src]
    return cached_exe("decode_ukernels", sources, sorted((CSRC / "ukernels").glob("*.h")), [*flags, f"-I{CSRC}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--keys", type=int, default=2048, help="keys per kv head (a multiple of 64)")
    ap.add_argument("--theta", type=float, nargs="+", default=[0.3, 0.6, 3e38])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if ns.keys < 64 or ns.keys % 64:
        raise SystemExit(f"error: --keys must be a positive multiple of 64, got {ns.keys}")
    if ns.reps < 1 or any(not t >= 0 for t in ns.theta):
        raise SystemExit("error: --reps must be >= 1 and --theta values >= 0")
    exe = build()
    rows = []
    for name in ns.shapes:
        sh = SHAPES[name]
        for theta in ns.theta:
            print(f"{name} θ {theta:g} ...", file=sys.stderr)
            out = subprocess.run([str(exe), str(sh["rows"]), str(sh["head_dim"]), str(ns.keys), str(sh["kv_heads"]),
                                  repr(theta), str(ns.reps)], check=True, capture_output=True, text=True).stdout
            r = dict(shape=name, **json.loads(out))
            r["s_m"] = 1.0 - r["nnz_per_key"] / r["head_dim"]
            for v, pv in (("f32v", "pv_ns"), ("f16v", "pv_f16v_ns")):
                r[f"delta_{v}_ns"] = r["deltaqkdot_ns"] + r["softmax_ns"] + r[pv]
                r[f"dense_{v}_ns"] = r["qkdot_ns"] + r["softmax_ns"] + r[pv]
                r[f"ratio_{v}"] = r[f"delta_{v}_ns"] / r[f"dense_{v}_ns"]
            rows.append(r)
    if ns.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| shape | rows | head_dim | θ | S_m | qkdot ns | deltaqkdot ns | softmax ns | P·V ns | P·V fp16-V ns "
          "| delta/dense (fp32 V) | delta/dense (fp16 V) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['rows']} | {r['head_dim']} | {r['theta']:g} | {r['s_m']:.1%} | {r['qkdot_ns']:.2f} | "
              f"{r['deltaqkdot_ns']:.2f} | {r['softmax_ns']:.2f} | {r['pv_ns']:.2f} | {r['pv_f16v_ns']:.2f} | "
              f"{r['ratio_f32v']:.2f} | {r['ratio_f16v']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
