"""Export benchmark: wall time and peak RSS of `python -m export`, and .pte load time.

    python bench/export_smollm2.py [--config smollm2_135m.yaml] [--out DIR] [--loads 5] [--baseline]

Runs the export in a child process (so its peak RSS is the child's own), then loads the
written .pte in fresh child processes. Prints a table with each figure, its target and the
figure/target ratio (<= 1.0 meets the target); progress on stderr, the table on stdout.
With --baseline it first exports with every XNNPACK pass (backend.skip_idle_passes=false) in
the same run and prints the wall-time and lower-stage ratios against it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"export_wall_s": 240.0, "export_peak_rss_gb": 4.0, "pte_load_s": 3.0}

LOAD_SNIPPET = """
import sys, time
t0 = time.perf_counter()
from export.runtime import PteModel
m = PteModel(sys.argv[1])
print(m.load_s, time.perf_counter() - t0)
"""


def run_export(config: str, out: Path, *overrides: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "export", "--config", config, f"output.dir={out}", *overrides,
                           "--json", "-q"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"export failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # the largest child so far
    return {"wall_s": wall, "peak_rss_gb": rss_kb / 1024 / 1024, "manifest": json.loads(proc.stdout)}


def load_times(pte: Path, n: int) -> list:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = []
    for _ in range(n):
        r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(pte)], env=env, capture_output=True, text=True,
                           check=True)
        out.append(float(r.stdout.split()[0]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smollm2_135m.yaml")
    ap.add_argument("--out", default=None)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--baseline", action="store_true", help="also export with every XNNPACK pass, for the ratio")
    ns = ap.parse_args()
    out = Path(ns.out or tempfile.mkdtemp(prefix="bench_export_"))
    base = None
    if ns.baseline:
        print(f"baseline: exporting {ns.config} with every XNNPACK pass ...", file=sys.stderr)
        base = run_export(ns.config, out / "baseline", "backend.skip_idle_passes=false")
    print(f"exporting {ns.config} to {out} ...", file=sys.stderr)
    ex = run_export(ns.config, out)
    m = ex["manifest"]
    print(f"loading {m['paths']['pte']} x{ns.loads} ...", file=sys.stderr)
    loads = load_times(Path(m["paths"]["pte"]), ns.loads)
    rows = [("export_wall_s", ex["wall_s"]), ("export_peak_rss_gb", ex["peak_rss_gb"]),
            ("pte_load_s", statistics.median(loads))]
    print(f"| figure | value | target | ratio |\n|---|---:|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} | {TARGETS[name]:.1f} | {value / TARGETS[name]:.3f} |")
    print(f"\nstages (s): {json.dumps(m['timings_s'])}")
    if base:
        b = base["manifest"]
        print(f"vs every XNNPACK pass (same run): wall {ex['wall_s']:.1f} / {base['wall_s']:.1f} s = "
              f"{ex['wall_s'] / base['wall_s']:.3f}, lower {m['timings_s']['lower']:.1f} / "
              f"{b['timings_s']['lower']:.1f} s = {m['timings_s']['lower'] / b['timings_s']['lower']:.3f}, "
              f"same program bytes: {Path(m['paths']['pte']).read_bytes() == Path(b['paths']['pte']).read_bytes()}")
    print(f"pte bytes: {m['pte_bytes']}, delegate calls: {m['ops']['delegate_calls']}, "
          f"validation: max_abs_diff {m['validation']['max_abs_diff']:.3g}, top1 {m['validation']['top1_agreement']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
