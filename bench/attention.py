"""Delta-attention kernel vs the best dense attention, same shapes, same run.

    python bench/attention.py [--n 512 1024 2048 4096] [--decode-context 1024 2048 4096]
                              [--targets 0.4 0.6] [--gamma 0.05] [--threads 1 2] [--reps 3] [--json]

Prefill: one call from position 0 (cache update included on both sides). Decode: one token at the
given context after a prefill of the rest (timed alone; the state is restored between repetitions).
The dense baseline is the faster of ExecuTorch's `llama::update_cache` + `llama::custom_sdpa` and
our own kernel's exact path (every key in the exact band: the same flash-style tiles with no
sparse part), and the table says which. The delta kernel runs with an fp32 and an fp16 V
cache (attention.v_cache). θ is searched so the kernel's own S_c lands on each
target. Keys drift like real post-RoPE keys. Each row runs at a given thread count on both sides:
ExecuTorch's threadpool (custom_sdpa) and our core's task pool are both set to it. Progress on
stderr; the markdown table (or, with --json, a JSON list of rows) on stdout; ratio = delta_ms /
dense_ms (< 1: delta is faster).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

SHAPES = {"smollm2-135m": (9, 3, 64), "llama-3.2-1b": (32, 8, 64)}
EXACT = dict(theta=0.0, gamma=1.0, w_decode=1 << 20)


def synthetic_inputs(n: int, h: int, hkv: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n, h, d, generator=g)
    k = torch.randn(1, 1, hkv, d, generator=g) * 2 + torch.randn(1, n, hkv, d, generator=g).cumsum(1) * 0.25
    v = torch.randn(1, n, hkv, d, generator=g)
    return q, k, v


class Delta:
    """One layer's delta state and the op. The ring holds n keys: enough for the exact path's
    band (every key), which shares the state object with the delta runs."""

    def __init__(self, n, hkv, d, v_dtype=torch.float32):
        from delegates.op import STATE, empty_state

        state = empty_state(n, n, hkv, d, v_dtype)
        self.bufs = [state[name] for name in STATE]

    def __call__(self, q, k, v, start, theta, gamma, w_decode=4):
        return torch.ops.deltallm.delta_attention(q, k, v, *self.bufs, start, theta, gamma, 1 << 20, w_decode, 0)


def counted(fn):
    from delegates import stats

    stats.reset()
    fn()
    s = stats.summary()
    return s


def timed(fn, reps, before=None):
    if before:
        before()
    fn()
    out = []
    for _ in range(reps):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def set_threads(n: int) -> None:
    """Both sides at n threads: custom_sdpa runs on ExecuTorch's threadpool (whatever
    torch.set_num_threads says), our eager op on the core's task pool."""
    from executorch.extension.pybindings import portable_lib
    from delegates.library import core

    portable_lib._unsafe_reset_threadpool(n)
    if core().dlm_set_num_threads(n) != 0:
        raise SystemExit(f"--threads: {n} is out of range")


def theta_for_target(run_at, target, phase):
    lo, hi = 0.0, 8.0
    for _ in range(18):
        mid = (lo + hi) / 2
        if counted(lambda: run_at(mid))[phase]["total"]["s_c"] < target:
            lo = mid
        else:
            hi = mid
    return hi


def prefill_rows(name, h, hkv, d, n, ns, make):
    q, k, v = make(n, h, hkv, d)
    kc, vc = torch.zeros(1, n, hkv, d), torch.zeros(1, n, hkv, d)

    def sdpa():
        torch.ops.llama.update_cache(k, kc, 0)
        torch.ops.llama.update_cache(v, vc, 0)
        return torch.ops.llama.custom_sdpa(q, kc, vc, 0, None, 0, True)

    delta = Delta(n, hkv, d)
    thetas = {}
    for target in ns.targets:
        print(f"{name} prefill n={n} target {target:.0%} ...", file=sys.stderr)
        thetas[target] = theta_for_target(lambda t: delta(q, k, v, 0, t, ns.gamma), target, "prefill")
    for threads in ns.threads:
        set_threads(threads)
        dense = {"custom_sdpa": timed(sdpa, ns.reps),
                 "deltallm_exact": timed(lambda: delta(q, k, v, 0, EXACT["theta"], EXACT["gamma"]), ns.reps)}
        best = min(dense, key=dense.get)
        delta16 = Delta(n, hkv, d, torch.float16)
        for target, theta in thetas.items():
            tot = counted(lambda: delta(q, k, v, 0, theta, ns.gamma))["prefill"]["total"]
            t_delta = timed(lambda: delta(q, k, v, 0, theta, ns.gamma), ns.reps)
            t16 = timed(lambda: delta16(q, k, v, 0, theta, ns.gamma), ns.reps)
            yield dict(shape=name, phase="prefill", n=n, threads=threads, theta=theta, s_m=tot["s_m"],
                       s_c=tot["s_c"], dense_ms=dense[best] * 1e3, dense_impl=best,
                       custom_sdpa_ms=dense["custom_sdpa"] * 1e3, delta_ms=t_delta * 1e3, ratio=t_delta / dense[best],
                       delta_f16v_ms=t16 * 1e3, ratio_f16v=t16 / dense[best])
        set_threads(1)


def decode_rows(name, h, hkv, d, ctx, ns, make):
    q, k, v = make(ctx, h, hkv, d)
    kc, vc = torch.zeros(1, ctx, hkv, d), torch.zeros(1, ctx, hkv, d)
    torch.ops.llama.update_cache(k[:, :-1], kc, 0)
    torch.ops.llama.update_cache(v[:, :-1], vc, 0)
    q1, k1, v1, last = q[:, -1:], k[:, -1:], v[:, -1:], ctx - 1

    def sdpa():
        torch.ops.llama.update_cache(k1, kc, last)
        torch.ops.llama.update_cache(v1, vc, last)
        return torch.ops.llama.custom_sdpa(q1, kc, vc, last, None, 0, True)

    def primed(theta, gamma, w_decode, v_dtype=torch.float32):
        """A delta state after the prefill of ctx-1 tokens, and a decode step restoring it first."""
        delta = Delta(ctx, hkv, d, v_dtype)
        delta(q[:, :-1], k[:, :-1], v[:, :-1], 0, theta, gamma)
        saved = [b.clone() for b in delta.bufs]

        def restore():
            for b, s in zip(delta.bufs, saved):
                b.copy_(s)

        return delta, restore, (lambda: delta(q1, k1, v1, last, theta, gamma, w_decode))

    thetas = {}
    for target in ns.targets:
        print(f"{name} decode ctx={ctx} target {target:.0%} ...", file=sys.stderr)

        def s_c_of(theta):
            _, restore, step = primed(theta, ns.gamma, 4)
            restore()
            return step

        thetas[target] = theta_for_target(lambda t: s_c_of(t)(), target, "decode")
    for threads in ns.threads:
        set_threads(threads)
        _, restore_x, step_x = primed(EXACT["theta"], EXACT["gamma"], EXACT["w_decode"])
        dense = {"custom_sdpa": timed(sdpa, ns.reps * 5), "deltallm_exact": timed(step_x, ns.reps * 5, restore_x)}
        best = min(dense, key=dense.get)
        for target, theta in thetas.items():
            delta, restore, step = primed(theta, ns.gamma, 4)
            s_m = counted(lambda: Delta(ctx, hkv, d)(q, k, v, 0, theta, ns.gamma))["prefill"]["total"]["s_m"]
            restore()
            tot = counted(step)["decode"]["total"]
            t_delta = timed(step, ns.reps * 5, restore)
            _, restore16, step16 = primed(theta, ns.gamma, 4, torch.float16)
            t16 = timed(step16, ns.reps * 5, restore16)
            yield dict(shape=name, phase="decode", n=ctx, threads=threads, theta=theta, s_m=s_m, s_c=tot["s_c"],
                       dense_ms=dense[best] * 1e3, dense_impl=best, custom_sdpa_ms=dense["custom_sdpa"] * 1e3,
                       delta_ms=t_delta * 1e3, ratio=t_delta / dense[best], delta_f16v_ms=t16 * 1e3,
                       ratio_f16v=t16 / dense[best])
        set_threads(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[512, 1024, 2048, 4096])
    ap.add_argument("--decode-context", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.4, 0.6])
    ap.add_argument("--gamma", type=float, default=0.05)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    torch.set_num_threads(1)
    from delegates import op  # noqa: F401
    from delegates.library import core
    from export.attention import load_llama_custom_ops

    load_llama_custom_ops()
    set_threads(1)
    print(f"kernel variant: {core().dlm_kernel_arch().decode()}, gamma: {ns.gamma}", file=sys.stderr)
    rows = []
    if not ns.json:
        print("| shape | phase | n | threads | S_m | S_c | dense ms (best) | custom_sdpa ms | delta ms | delta/dense "
              "| delta fp16-V ms | fp16-V/dense |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (h, hkv, d) in SHAPES.items():
        gens = [prefill_rows(name, h, hkv, d, n, ns, synthetic_inputs) for n in ns.n]
        gens += [decode_rows(name, h, hkv, d, c, ns, synthetic_inputs) for c in ns.decode_context]
        for gen in gens:
            for r in gen:
                rows.append(r)
                if not ns.json:
                    print(f"| {r['shape']} | {r['phase']} | {r['n']} | {r['threads']} | {r['s_m']:.1%} | {r['s_c']:.1%} | "
                          f"{r['dense_ms']:.2f} ({r['dense_impl']}) | {r['custom_sdpa_ms']:.2f} | {r['delta_ms']:.2f} | "
                          f"{r['ratio']:.2f} | {r['delta_f16v_ms']:.2f} | {r['ratio_f16v']:.2f} |", flush=True)
    if ns.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
