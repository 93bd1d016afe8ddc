"""Delta-attention kernel vs ExecuTorch's llama::custom_sdpa, same shapes, same run.

    python bench/attention.py [--n 512 1024 2048] [--targets 0.4 0.6 0.8] [--reps 3] [--threads 1]

One prefill call from position 0 per measurement (cache update included on both sides:
llama::update_cache for dense). Keys drift like real post-RoPE keys; θ is searched so the
kernel's own S_c lands on each target. Prints per shape: S_m, S_c, dense ms, delta ms, the
speed-up dense/delta, and the ideal 1/(1 − S_c) for the part that is sparsified (Q·Kᵀ).
Progress on stderr, the markdown table on stdout.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SHAPES = {"smollm2-135m": (9, 3, 64), "llama-3.2-1b": (32, 8, 64)}


def make_inputs(n: int, h: int, hkv: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n, h, d, generator=g)
    k = torch.randn(1, 1, hkv, d, generator=g) * 2 + torch.randn(1, n, hkv, d, generator=g).cumsum(1) * 0.25
    v = torch.randn(1, n, hkv, d, generator=g)
    return q, k, v


class Delta:
    def __init__(self, n, hkv, d):
        shape = (1, n, hkv, d)
        self.bufs = [torch.zeros(shape), torch.zeros(shape), torch.zeros(shape, dtype=torch.int32),
                     torch.zeros(shape), torch.zeros(shape[:3], dtype=torch.int32), torch.zeros(1, hkv, d)]

    def __call__(self, q, k, v, theta, gamma):
        return torch.ops.deltallm.delta_attention(q, k, v, *self.bufs, 0, theta, gamma, 1 << 20, 4, 0)


def s_c_for(delta, q, k, v, theta, gamma):
    from delegates import stats

    stats.reset()
    delta(q, k, v, theta, gamma)
    t = stats.summary()["prefill"]["total"]
    return t["s_m"], t["s_c"]


def theta_for_target(delta, q, k, v, gamma, target):
    lo, hi = 0.0, 8.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if s_c_for(delta, q, k, v, mid, gamma)[1] < target:
            lo = mid
        else:
            hi = mid
    return hi


def timed(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    ap.add_argument("--gamma", type=float, default=0.05)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ns = ap.parse_args()
    torch.set_num_threads(ns.threads)
    from delegates import op  # noqa: F401
    from delegates.library import core
    from export.attention import load_llama_custom_ops

    load_llama_custom_ops()
    print(f"kernel variant: {core().dlm_kernel_arch().decode()}, threads: {ns.threads}, gamma: {ns.gamma}",
          file=sys.stderr)
    print("| shape | n | target S_c | theta | S_m | S_c | dense ms | delta ms | speed-up | ideal 1/(1-S_c) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (h, hkv, d) in SHAPES.items():
        for n in ns.n:
            q, k, v = make_inputs(n, h, hkv, d)
            kc, vc = torch.zeros(1, n, hkv, d), torch.zeros(1, n, hkv, d)

            def dense():
                torch.ops.llama.update_cache(k, kc, 0)
                torch.ops.llama.update_cache(v, vc, 0)
                return torch.ops.llama.custom_sdpa(q, kc, vc, 0, None, 0, True)

            t_dense = timed(dense, ns.reps)
            delta = Delta(n, hkv, d)
            for target in ns.targets:
                print(f"{name} n={n} target {target:.0%} ...", file=sys.stderr)
                theta = theta_for_target(delta, q, k, v, ns.gamma, target)
                s_m, s_c = s_c_for(delta, q, k, v, theta, ns.gamma)
                t_delta = timed(lambda: delta(q, k, v, theta, ns.gamma), ns.reps)
                print(f"| {name} | {n} | {target:.0%} | {theta:.3f} | {s_m:.1%} | {s_c:.1%} | {t_dense * 1e3:.2f} | "
                      f"{t_delta * 1e3:.2f} | {t_dense / t_delta:.2f} | {1 / (1 - s_c):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
