"""Delta-attention kernel vs the best dense attention, same shapes, same run.

    python bench/attention.py [--n 512 1024 2048 4096] [--decode-context 1024 2048 4096]
                              [--decode-mode warm streamed] [--targets 0.4 0.6] [--gamma 0.05]
                              [--threads 1 2] [--reps 3] [--shapes ...] [--keys synthetic captured]
                              [--captured-layer 15] [--json]

Prefill: one call from position 0 (cache update included on both sides). Decode: one token at the
given context after a prefill of the rest, per layer; "warm" times one layer's state over and
over (it stays in the CPU caches), "streamed" steps one state per layer of the model in turn
(30 for SmolLM2, 16 for Llama-3.2-1B), as a decode step does, so the caches come from memory
(the `layers` column); our kernels' decode steps are timed natively (bench/decode_step.cc over
the core's C API, no Python between calls: the eager op's wrapper costs tens of µs per call, as
much as a short step), each checked against the op's own S_c. The dense baseline is the faster
of ExecuTorch's `llama::update_cache` + `llama::custom_sdpa` and our own kernel's exact path (`deltallm::dense_attention`, the
`attention.kind=dense` program's kernel: the same flash-style tiles, every key exact), and the
table says which. The delta kernel runs with an fp32 and an fp16 V
cache (attention.v_cache), and the dense op with an fp16 V cache is timed too, so the fp16-V delta
run also has a same-V-cache ratio; decode rows also time the dense op with fp16 K and V caches
(attention.k_cache=fp16: half the bytes of dense K+V, less than delta's), the fp16-V delta's ratio
to it in the last column. The floor is the delta kernel with θ = FLOOR_THETA: no ΔK
non-zero after the sink, so only the exact band, the softmax and P·V are left — the ratio no θ
can go below (at that θ's S_c, the band's limit). θ is searched so the kernel's own S_c lands on each
target. Synthetic keys drift like real post-RoPE keys; captured ones are SmolLM2-135M's own (one
layer, SQuAD text, fp32 eager; SmolLM2's shape only). Each row runs at a given thread count on both sides:
ExecuTorch's threadpool (custom_sdpa) and our core's task pool are both set to it. Progress on
stderr; the markdown table (or, with --json, a JSON list of rows) on stdout; ratio = delta_ms /
dense_ms (< 1: delta is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FLOOR_THETA = 3.0e38   # finite in fp32; no |Δ| exceeds it
SHAPES = {"smollm2-135m": (9, 3, 64), "llama-3.2-1b": (32, 8, 64)}
LAYERS = {"smollm2-135m": 30, "llama-3.2-1b": 16}
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def synthetic_inputs(n: int, h: int, hkv: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n, h, d, generator=g)
    k = torch.randn(1, 1, hkv, d, generator=g) * 2 + torch.randn(1, n, hkv, d, generator=g).cumsum(1) * 0.25
    v = torch.randn(1, n, hkv, d, generator=g)
    return q, k, v


def capture_smollm2(layers, n: int) -> dict:
    """SmolLM2-135M's own post-RoPE q, k, v (fp32 eager) of the given layers on the first n tokens
    of SQuAD v1.1 dev paragraphs (concatenated), one prefill: {layer: (q, k, v)}."""
    from delegates import attention_core
    from export.config import load_config
    from export.datasets import squad_paragraphs, squad_dev_path
    from export.pipeline import build_model, encode_prompt
    from export.sources import load_source

    cfg = load_config("smollm2_135m.yaml", ["quantization.linear=fp32", "attention.kind=dense",
                                            "attention.dense_kernel=deltallm", f"export.max_seq_len={n}",
                                            f"export.max_context_len={n}"])
    source = load_source(cfg)
    model = build_model(cfg, source).model
    text = "\n\n".join(squad_paragraphs(squad_dev_path())[:400])
    ids = encode_prompt(source.tokenizer, text, source.args.bos_id)[:n]
    if len(ids) < n:
        raise SystemExit(f"error: the SQuAD text gives {len(ids)} tokens, fewer than {n}")
    cores = [m for m in model.modules() if isinstance(m, attention_core.ExactAttention)]
    bad = [layer for layer in layers if not 0 <= layer < len(cores)]
    if bad:
        raise SystemExit(f"error: SmolLM2-135M has no layer {bad[0]} (its layers are 0..{len(cores) - 1})")
    seen = {}
    hooks = [cores[layer].register_forward_hook(
        lambda mod, args, out, layer=layer: seen.__setitem__(layer, tuple(t.detach().clone().float() for t in args[:3])))
        for layer in layers]
    print(f"capturing SmolLM2-135M layers {list(layers)} q/k/v on {n} tokens of SQuAD text ...", file=sys.stderr)
    with torch.no_grad():
        model(torch.tensor([ids]), torch.tensor([0]))
    for hook in hooks:
        hook.remove()
    return seen


class CapturedInputs:
    """SmolLM2-135M's own post-RoPE q, k, v of one layer on real text: SQuAD v1.1 dev paragraphs,
    concatenated, one fp32 eager prefill of the longest n asked (captured once, then sliced)."""

    def __init__(self, layer: int, max_tokens: int):
        self.layer, self.max_tokens, self.qkv = layer, max_tokens, None

    def __call__(self, n: int, h: int, hkv: int, d: int):
        if self.qkv is None:
            self.qkv = capture_smollm2([self.layer], self.max_tokens)[self.layer]
        q, k, v = self.qkv
        if (q.shape[2], k.shape[2], q.shape[3]) != (h, hkv, d) or n > q.shape[1]:
            raise SystemExit(f"error: captured q/k/v are {tuple(q.shape)}, asked n={n} heads {h}/{hkv} d {d}")
        return q[:, :n].contiguous(), k[:, :n].contiguous(), v[:, :n].contiguous()


class Delta:
    """One layer's delta state and the op. The ring is the program's: the widest band of a call
    of at most n tokens (bench/decode_step.cc sizes it the same way)."""

    def __init__(self, n, hkv, d, gamma, v_dtype=torch.float32, w_decode=4, stream_rows=0):
        from delegates.attention_core import ring_len
        from delegates.op import STATE, empty_state

        state = empty_state(n, ring_len(n, gamma, 1 << 20, w_decode), hkv, d, v_dtype, stream_rows)
        self.bufs = [state[name] for name in STATE]

    def __call__(self, q, k, v, start, theta, gamma, w_decode=4):
        return torch.ops.deltallm.delta_attention(q, k, v, *self.bufs, start, theta, gamma, 1 << 20, w_decode, 0)


def counted(fn):
    from delegates import stats

    stats.reset()
    fn()
    s = stats.summary()
    return s


def timed(fn, reps):
    fn()
    out = []
    for _ in range(reps):
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


def theta_for_target(run_at, target, phase, run_counts=False):
    """Bisect θ so the kernel's own S_c hits target (run_counts: run_at returns the counts itself)."""
    lo, hi = 0.0, 8.0
    for _ in range(18):
        mid = (lo + hi) / 2
        counts = run_at(mid) if run_counts else counted(lambda: run_at(mid))
        if counts[phase]["total"]["s_c"] < target:
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

    kx, vx = torch.zeros(1, n, hkv, d), torch.zeros(1, n, hkv, d)
    delta = Delta(n, hkv, d, ns.gamma)
    thetas = {}
    for target in ns.targets:
        print(f"{name} prefill n={n} target {target:.0%} ...", file=sys.stderr)
        thetas[target] = theta_for_target(lambda t: delta(q, k, v, 0, t, ns.gamma), target, "prefill")
    for threads in ns.threads:
        set_threads(threads)
        dense = {"custom_sdpa": timed(sdpa, ns.reps),
                 "deltallm_exact": timed(lambda: torch.ops.deltallm.dense_attention(q, k, v, kx, vx, 0), ns.reps)}
        best = min(dense, key=dense.get)
        vx16 = torch.zeros(1, n, hkv, d, dtype=torch.float16)
        dense16 = timed(lambda: torch.ops.deltallm.dense_attention(q, k, v, kx, vx16, 0), ns.reps)
        delta16 = Delta(n, hkv, d, ns.gamma, torch.float16)
        floor_s_c = counted(lambda: delta(q, k, v, 0, FLOOR_THETA, ns.gamma))["prefill"]["total"]["s_c"]
        t_floor = timed(lambda: delta(q, k, v, 0, FLOOR_THETA, ns.gamma), ns.reps)
        for target, theta in thetas.items():
            tot = counted(lambda: delta(q, k, v, 0, theta, ns.gamma))["prefill"]["total"]
            t_delta = timed(lambda: delta(q, k, v, 0, theta, ns.gamma), ns.reps)
            t16 = timed(lambda: delta16(q, k, v, 0, theta, ns.gamma), ns.reps)
            yield dict(shape=name, phase="prefill", n=n, threads=threads, layers=1, theta=theta, s_m=tot["s_m"],
                       s_c=tot["s_c"], dense_ms=dense[best] * 1e3, dense_impl=best,
                       custom_sdpa_ms=dense["custom_sdpa"] * 1e3, delta_ms=t_delta * 1e3, ratio=t_delta / dense[best],
                       delta_f16v_ms=t16 * 1e3, ratio_f16v=t16 / dense[best], dense_f16v_ms=dense16 * 1e3,
                       ratio_f16v_same_v=t16 / dense16, floor_s_c=floor_s_c, floor_ms=t_floor * 1e3,
                       floor_ratio=t_floor / dense[best])
        set_threads(1)


def decode_step(kind, v_fp16, ctx, h, hkv, d, layers, threads, reps, theta, gamma, qkv: Path, out=None) -> dict:
    """bench/decode_step.cc (built once per content, linked to delegates/lib/libdeltallm_core.so);
    v_fp16: a bool, or the V cache's format by name (fp32, fp16, q8_0, q4_0); out: a file for the
    last step's output."""
    from cxx_cache import cached_exe
    from delegates.build import CSRC, LIB_DIR

    exe = cached_exe("decode_step", [ROOT / "bench" / "decode_step.cc"], [CSRC / "deltaattn.h"],
                     [f"-I{CSRC}", f"-L{LIB_DIR}", "-ldeltallm_core", f"-Wl,-rpath,{LIB_DIR}"])
    args = [kind, v_fp16 if isinstance(v_fp16, str) else int(v_fp16), ctx, h, hkv, d, layers, threads, reps, repr(float(theta)), repr(float(gamma)), qkv]
    args += [out] if out else []
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"error: decode_step failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def decode_rows(name, h, hkv, d, ctx, ns, make, n_layers, tmp):
    """One decode token at context ctx, per layer: warm (one layer's state, cache-resident) and
    streamed (one state per layer of the model, stepped in turn as a decode step does, so the
    caches are read from memory as in a real model). The step is repeated at the same position:
    dense's update is idempotent, delta restores its reference key first. Our kernels' steps are
    timed natively (bench/decode_step.cc over the core's C API, as the runtime calls them):
    the eager op's Python wrapper costs more than a short step (tens of µs per call, more for
    delta's eleven tensors). custom_sdpa is timed through torch.ops (a C++ op)."""
    q, k, v = make(ctx, h, hkv, d)
    q1, k1, v1, last = q[:, -1:], k[:, -1:], v[:, -1:], ctx - 1
    thetas = {}
    for target in ns.targets:
        print(f"{name} decode ctx={ctx} target {target:.0%} ...", file=sys.stderr)

        def s_c_of(theta):
            delta = Delta(ctx, hkv, d, ns.gamma)
            delta(q[:, :-1], k[:, :-1], v[:, :-1], 0, theta, ns.gamma)
            return counted(lambda: delta(q1, k1, v1, last, theta, ns.gamma))

        thetas[target] = theta_for_target(lambda t: s_c_of(t), target, "decode", run_counts=True)

    def sdpa_layers():
        states = []
        for _ in range(n_layers):
            kc, vc = torch.zeros(1, ctx, hkv, d), torch.zeros(1, ctx, hkv, d)
            torch.ops.llama.update_cache(k[:, :-1], kc, 0)
            torch.ops.llama.update_cache(v[:, :-1], vc, 0)
            states.append((kc, vc))

        def step(kc, vc):
            torch.ops.llama.update_cache(k1, kc, last)
            torch.ops.llama.update_cache(v1, vc, last)
            torch.ops.llama.custom_sdpa(q1, kc, vc, last, None, 0, True)
        return states, step

    def timed_layers(make_states):
        states, step = make_states()

        def sweep():
            for st in states:
                step(*st)
        reps = ns.reps * (20 if n_layers == 1 else 3)
        return timed(sweep, reps) / n_layers

    fd, qkv = tempfile.mkstemp(dir=tmp, suffix=".f32")   # q, k, v for the native steps
    os.close(fd)
    qkv = Path(qkv)
    torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)]).numpy().tofile(qkv)

    def native(kind, v_dtype=torch.float32, theta=0.0, s_c=None):
        r = decode_step(kind, v_dtype == torch.float16, ctx, h, hkv, d, n_layers, threads, ns.reps * 3, theta,
                        ns.gamma, qkv)
        if s_c is not None and abs(r["decode_s_c"] - s_c) > 1e-9:   # the native step did what the op does
            raise SystemExit(f"error: decode_step counted S_c {r['decode_s_c']}, the op {s_c} (θ {theta})")
        return r["ms"] / 1e3

    for threads in ns.threads:
        set_threads(threads)
        dense = {"custom_sdpa": timed_layers(sdpa_layers), "deltallm_exact": native("dense")}
        best = min(dense, key=dense.get)
        dense16 = native("dense", torch.float16)
        dense16kv = native("dense_f16k", torch.float16)
        floor_s_c = s_c_of(FLOOR_THETA)["decode"]["total"]["s_c"]
        t_floor = native("delta", theta=FLOOR_THETA, s_c=floor_s_c)
        for target, theta in thetas.items():
            s_m = counted(lambda: Delta(ctx, hkv, d, ns.gamma)(q, k, v, 0, theta, ns.gamma))["prefill"]["total"]["s_m"]
            tot = s_c_of(theta)["decode"]["total"]
            t_delta = native("delta", theta=theta, s_c=tot["s_c"])
            t16 = native("delta", torch.float16, theta, tot["s_c"])
            yield dict(shape=name, phase="decode", n=ctx, threads=threads, layers=n_layers, theta=theta, s_m=s_m,
                       s_c=tot["s_c"], dense_ms=dense[best] * 1e3, dense_impl=best,
                       custom_sdpa_ms=dense["custom_sdpa"] * 1e3, delta_ms=t_delta * 1e3,
                       ratio=t_delta / dense[best], delta_f16v_ms=t16 * 1e3, ratio_f16v=t16 / dense[best],
                       dense_f16v_ms=dense16 * 1e3, ratio_f16v_same_v=t16 / dense16, floor_s_c=floor_s_c,
                       floor_ms=t_floor * 1e3, floor_ratio=t_floor / dense[best], dense_f16kv_ms=dense16kv * 1e3,
                       ratio_f16v_vs_f16kv=t16 / dense16kv)
        set_threads(1)


def tagged(rows, keys: str):
    for r in rows:
        yield {"keys": keys, **r}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--n", type=int, nargs="*", default=[512, 1024, 2048, 4096])
    ap.add_argument("--decode-context", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--decode-mode", nargs="+", choices=["warm", "streamed"], default=["warm", "streamed"])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.4, 0.6])
    ap.add_argument("--gamma", type=float, default=0.05)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keys", nargs="+", choices=["synthetic", "captured"], default=["synthetic", "captured"],
                    help="captured: SmolLM2-135M's own q/k/v of one layer on SQuAD text (its shape only)")
    ap.add_argument("--captured-layer", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    captured = CapturedInputs(ns.captured_layer, max([*ns.n, *ns.decode_context, 1]))
    torch.set_num_threads(1)
    from delegates import op  # noqa: F401
    from delegates.library import core
    from export.attention import load_llama_custom_ops

    load_llama_custom_ops()
    set_threads(1)
    print(f"kernel variant: {core().dlm_kernel_arch().decode()}, gamma: {ns.gamma}", file=sys.stderr)
    rows = []
    workdir = tempfile.TemporaryDirectory()   # q/k/v files for the native decode steps; removed at exit
    tmp = Path(workdir.name)
    if not ns.json:
        print("| shape | keys | phase | n | threads | layers | S_m | S_c | dense ms (best) | custom_sdpa ms | delta ms "
              "| delta/dense | delta fp16-V ms | fp16-V/dense | dense fp16-V ms | fp16-V/dense fp16-V "
              "| floor S_c | floor ms | floor/dense | dense fp16-KV ms | fp16-V/dense fp16-KV |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ns.shapes:
        h, hkv, d = SHAPES[name]
        modes = [1 if m == "warm" else LAYERS[name] for m in ns.decode_mode]
        gens = []
        for keys in ns.keys:
            if keys == "captured" and name != "smollm2-135m":
                continue   # the only real weights on this machine
            make = synthetic_inputs if keys == "synthetic" else captured
            gens += [tagged(prefill_rows(name, h, hkv, d, n, ns, make), keys) for n in ns.n]
            gens += [tagged(decode_rows(name, h, hkv, d, c, ns, make, L, tmp), keys)
                     for c in ns.decode_context for L in modes]
        for gen in gens:
            for r in gen:
                rows.append(r)
                if not ns.json:
                    print(f"| {r['shape']} | {r['keys']} | {r['phase']} | {r['n']} | {r['threads']} | {r['layers']} | {r['s_m']:.1%} | {r['s_c']:.1%} | "
                          f"{r['dense_ms']:.2f} ({r['dense_impl']}) | {r['custom_sdpa_ms']:.2f} | {r['delta_ms']:.2f} | "
                          f"{r['ratio']:.2f} | {r['delta_f16v_ms']:.2f} | {r['ratio_f16v']:.2f} | {r['dense_f16v_ms']:.2f} | "
                          f"{r['ratio_f16v_same_v']:.2f} | {r['floor_s_c']:.1%} | {r['floor_ms']:.2f} | "
                          f"{r['floor_ratio']:.2f} | " + (f"{r['dense_f16kv_ms']:.2f} | {r['ratio_f16v_vs_f16kv']:.2f} |"
                                                          if "dense_f16kv_ms" in r else " | |"), flush=True)
    if ns.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
