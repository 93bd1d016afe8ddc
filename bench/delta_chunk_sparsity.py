"""How much of SmolLM2's ΔK sparsity a decode kernel could skip in whole SIMD chunks.

    python bench/delta_chunk_sparsity.py [--n 2048] [--theta 0.6 0.84 1.0] [--layers 0 3 15 25 29]
                                         [--budgets 0.5 0.6 0.7] [--per-layer] [--json]

The decode micro-kernel (`f32_deltaqkdot_ukernel_8x1`) decompresses every 8-element chunk of a
ΔK row, zero or not, so its work does not fall with S_m; only a chunk whose 8 elements are all
zero (mask byte 0) could be skipped. This measures that rate on SmolLM2-135M's own post-RoPE keys
(fp32 eager prefill of SQuAD v1.1 dev text, encoded by our kernel at each θ), in the stored
element order and with head_dim permuted per kv head so the sparsest elements share chunks (the
best a fixed permutation of q and k could do; chosen on the same keys, so optimistic). It also
gives the spread of the non-zeros per key (the 99th percentile and the largest density of a key
row) and, for a ΔK value stream budgeted at ρ·D values per key on average (attention.dk_budget;
every non-zero: ρ = 1), at ρ = 0.5, 0.6, 0.7 (--budgets): the share of the non-zeros the budget deferred
(1 − stored / stored without a budget, tokens 1..) and the share of key elements whose reference
key is more than θ away after encoding (0 when the budget never binds). Progress on stderr; a markdown table (or, with --json, a JSON list of rows) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention import Delta, capture_smollm2  # noqa: E402

GAMMA = 0.05
BUDGETS = (0.5, 0.6, 0.7)   # attention.dk_budget: ΔK values stored per key on average / head_dim


def encode(k: torch.Tensor, theta: float, budget: float = 1.0):
    """Encode k [1, n, Hkv, D] at θ with our kernel (the ΔK stream budgeted at budget·D values per key).
    Returns (mask bits [n, Hkv, D] float, k̂ after each token [n, Hkv, D])."""
    from delegates.op import STATE, dk_rows

    n, hkv, d = k.shape[1], k.shape[2], k.shape[3]
    delta = Delta(n, hkv, d, GAMMA, stream_rows=dk_rows(n, d, budget))
    delta(torch.zeros(1, n, hkv, d), k, torch.zeros_like(k), 0, theta, GAMMA)
    state = dict(zip(STATE, delta.bufs))
    bits = torch.stack([(state["dk_mask"][0] >> i) & 1 for i in range(8)], -1).reshape(n, hkv, d).bool()
    dk = torch.zeros(hkv, n, d)
    for g in range(hkv):   # the head's stream: the non-zeros in (token, element) order
        dk[g][bits[:, g]] = state["dk_val"][0, g].reshape(-1)[:int(state["dk_end"][0, n - 1, g])].float()
    return bits.float(), dk.transpose(0, 1).cumsum(0)


def chunk_rows(k: torch.Tensor, theta: float, budgets=BUDGETS) -> dict:
    """Encode k [1, n, Hkv, D] at θ with our kernel; S_m, the all-zero 8-element chunk rate as
    stored and with head_dim sorted by sparsity, the spread of per-element sparsity (tokens 1..), and
    what a budgeted ΔK stream defers."""
    n, hkv, d = k.shape[1], k.shape[2], k.shape[3]
    bits = encode(k, theta)[0][1:]                                        # token 0 is stored whole
    per_dim = 1 - bits.mean(0)                                            # [Hkv, D] sparsity per element
    order = per_dim.argsort(dim=1, descending=True)                       # sparsest first, per kv head
    sorted_bits = torch.gather(bits, 2, order.unsqueeze(0).expand_as(bits))

    def zero_chunk_rate(b):
        return (b.reshape(n - 1, hkv, d // 8, 8).sum(-1) == 0).float().mean().item()

    nnz = bits.sum(-1).flatten()                                          # per key row (token, kv head)
    over = {}
    for rho in budgets:
        b_bits, k_hat = encode(k, theta, rho)
        over[f"deferred_{round(rho * 100)}"] = 1 - b_bits[1:].sum().item() / max(1.0, nnz.sum().item())
        over[f"over_theta_{round(rho * 100)}"] = ((k[0, 1:] - k_hat[1:]).abs() > theta).float().mean().item()
    return dict(s_m=1 - bits.mean().item(), zero_chunks=zero_chunk_rate(bits),
                zero_chunks_sorted=zero_chunk_rate(sorted_bits), dim_s_min=per_dim.min().item(),
                dim_s_median=per_dim.median().item(), dim_s_max=per_dim.max().item(),
                key_density_p99=(nnz / d).quantile(0.99).item(), key_density_max=(nnz / d).max().item(), **over)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--theta", type=float, nargs="+", default=[0.6, 0.84, 1.0])
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 3, 15, 25, 29])
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    ap.add_argument("--per-layer", action="store_true", help="a row per layer and θ, not per θ")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if ns.n < 2:
        raise SystemExit(f"error: --n must be >= 2, got {ns.n}")
    if any(not 0 < b <= 1 for b in ns.budgets):
        raise SystemExit("error: --budgets values must be in (0, 1]")
    if any(t < 0 for t in ns.theta):
        raise SystemExit("error: --theta values must be >= 0")
    from delegates import op  # noqa: F401  (registers deltallm::delta_attention)

    captured = capture_smollm2(sorted(set(ns.layers)), ns.n)
    rows = []
    for theta in ns.theta:
        per = []
        for layer in sorted(captured):
            print(f"layer {layer} θ {theta} ...", file=sys.stderr)
            per.append(dict(layer=layer, theta=theta, **chunk_rows(captured[layer][1], theta, ns.budgets)))
        if ns.per_layer:
            rows += per
        else:   # every layer holds the same number of chunks: plain means
            mean = {key: sum(r[key] for r in per) / len(per) for key in per[0] if key not in ("layer", "theta")}
            mean["dim_s_min"] = min(r["dim_s_min"] for r in per)
            mean["dim_s_max"] = max(r["dim_s_max"] for r in per)
            mean["key_density_p99"] = max(r["key_density_p99"] for r in per)
            mean["key_density_max"] = max(r["key_density_max"] for r in per)
            rows.append(dict(layer="+".join(str(r["layer"]) for r in per), theta=theta, **mean))
    if ns.json:
        print(json.dumps(rows, indent=1))
        return 0
    caps = " | ".join(f"budget {rho:g}: deferred / beyond θ" for rho in ns.budgets)
    print("| layers | θ | S_m | all-zero 8-element chunks | same, head_dim sorted by sparsity | "
          f"per-element S_m min / median / max | key density p99 / max | {caps} |")
    print("|---|---:|---:|---:|---:|---|---|" + "---|" * len(ns.budgets))
    for r in rows:
        over = " | ".join(f"{r[f'deferred_{round(rho * 100)}']:.2%} / {r[f'over_theta_{round(rho * 100)}']:.2%}"
                          for rho in ns.budgets)
        print(f"| {r['layer']} | {r['theta']:g} | {r['s_m']:.1%} | {r['zero_chunks']:.1%} | "
              f"{r['zero_chunks_sorted']:.1%} | {r['dim_s_min']:.0%} / {r['dim_s_median']:.0%} / {r['dim_s_max']:.0%} | "
              f"{r['key_density_p99']:.0%} / {r['key_density_max']:.0%} | {over} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
