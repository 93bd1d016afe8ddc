"""One-off study: quantized ΔK codes against q8_0 / q4_0 keys at equal bytes, on SmolLM2's own keys.

    python studies/dk_codes.py [--n 1024] [--layers 0 7 15 23 29] [--theta 0.3 0.6 1.0] [--json]

A proxy for the accuracy question of the quantized-ΔK-code work, before any kernel: SmolLM2-135M's
post-RoPE q, k, v (fp32 eager prefill of SQuAD v1.1 dev text, bench/attention.py's capture) are
attended exactly with the keys each code would give back, and the attention output is compared
with exact attention (causal, all n rows; NMSE = ‖out − exact‖² / ‖exact‖², averaged over layers).
Values stay fp32, so only the key code differs. Codes (bytes per key and kv head, head_dim 64):

- fp16, q8_0 (68 B), q4_0 (36 B): the dense caches (delegates/formats.py round trips).
- ΔK fp16 at θ: today's code (bitmask + fp16 non-zeros: 8 + 2·nnz B), k̂ advancing by the stored
  value (error feedback).
- ΔK int8 at θ: bitmask + one int8 per non-zero (8 + nnz B); values on a per-(kv head, channel)
  step s = θ / 4 (|Δ| > θ is at least 4 steps, so a stored value is never 0), clamped to ±127
  steps; k̂ advances by exactly the stored code · s, so a clamped Δ is caught up by later keys.
- ΔK int4 at step s: every element coded, no mask (32 B): code = clamp(round((k − k̂)/s), −8, 7),
  k̂ += code · s; s per (kv head, channel) = the 99th percentile of |k_t − k_{t−1}| / 7 on the
  same keys (calibrated on what it is scored on: optimistic), times the factor given.
Token 0 is stored exactly in every ΔK code. Also printed: the RMS of k̂ − k and var(k)/var(Δk).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from attention import capture_smollm2  # noqa: E402
from delegates.reference import dense_attention as exact_attention  # noqa: E402


def delta_code(k, step_of, theta=None, lo=None, hi=None, fp16=False):
    """Error-feedback ΔK code over k [n, Hkv, D]: returns (k̂ after each token, non-zeros stored)."""
    k_hat = k[0].clone()
    out = [k_hat.clone()]
    nnz = 0
    for t in range(1, k.shape[0]):
        delta = k[t] - k_hat
        keep = delta.abs() > theta if theta is not None else torch.ones_like(delta, dtype=torch.bool)
        if fp16:
            stored = delta.half().float()
        else:
            stored = torch.clamp(torch.round(delta / step_of), lo, hi) * step_of
        stored = torch.where(keep, stored, torch.zeros_like(stored))
        nnz += int((stored != 0).sum()) if theta is not None else 0
        k_hat = k_hat + stored
        out.append(k_hat.clone())
    return torch.stack(out), nnz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 7, 15, 23, 29])
    ap.add_argument("--theta", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    ap.add_argument("--int4-scale", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    from delegates import formats

    seen = capture_smollm2(ns.layers, ns.n)
    rows: dict[str, dict] = {}

    def add(name, bytes_per_key, layer, k, k_hat, q, v, ref):
        out = exact_attention(q, k_hat, v)
        r = rows.setdefault(name, {"code": name, "bytes_per_key": [], "nmse": [], "k_rms": []})
        r["bytes_per_key"].append(bytes_per_key)
        r["nmse"].append(float(((out - ref) ** 2).sum() / (ref ** 2).sum()))
        r["k_rms"].append(float((k_hat - k).pow(2).mean().sqrt()))

    stats = []
    for layer in ns.layers:
        q, k, v = (t[0] for t in seen[layer])   # [n, H, D], [n, Hkv, D]
        n, hkv, d = k.shape
        print(f"layer {layer} ...", file=sys.stderr)
        ref = exact_attention(q, k, v)
        dk = k[1:] - k[:-1]
        stats.append(float(k.var() / dk.var()))
        for fmt, b in (("fp16", 2 * d), ("q8_0", d // 32 * 34), ("q4_0", d // 32 * 18)):
            add(fmt, b, layer, k, formats.round_trip(k, formats.as_format(fmt)), q, v, ref)
        for theta in ns.theta:
            k_hat, nnz = delta_code(k, None, theta=theta, fp16=True)
            add(f"dk fp16 θ {theta}", d / 8 + 2 * nnz / (n * hkv), layer, k, k_hat, q, v, ref)
            step = torch.full((hkv, d), theta / 4)
            k_hat, nnz = delta_code(k, step, theta=theta, lo=-127, hi=127)
            add(f"dk int8 θ {theta}", d / 8 + nnz / (n * hkv), layer, k, k_hat, q, v, ref)
        base = torch.quantile(dk.abs().reshape(-1, hkv * d).float(), 0.99, dim=0).reshape(hkv, d) / 7
        for f in ns.int4_scale:
            k_hat, _ = delta_code(k, base * f, lo=-8, hi=7)
            add(f"dk int4 step x{f}", d / 2, layer, k, k_hat, q, v, ref)
    table = []
    for r in rows.values():
        m = len(r["nmse"])
        table.append({"code": r["code"], "bytes_per_key": sum(r["bytes_per_key"]) / m,
                      "attn_nmse": sum(r["nmse"]) / m, "k_rms": sum(r["k_rms"]) / m})
    if ns.json:
        print(json.dumps({"n": ns.n, "layers": ns.layers, "var_k_over_var_dk": stats, "rows": table}, indent=1))
        return 0
    print(f"var(k)/var(Δk) per layer {ns.layers}: " + ", ".join(f"{x:.2f}" for x in stats))
    print("| key code | B per key and kv head | attention output NMSE | RMS k̂ − k |")
    print("|---|---:|---:|---:|")
    for r in sorted(table, key=lambda r: r["bytes_per_key"]):
        print(f"| {r['code']} | {r['bytes_per_key']:.1f} | {r['attn_nmse']:.2e} | {r['k_rms']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
