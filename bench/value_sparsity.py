"""Delta on values (ΔV, the issue's item 4) screened on real activations before any kernel work:
how sparse ΔV gets at a threshold θ_v and what it costs in attention output, beside ΔK.

    python bench/value_sparsity.py [--paragraphs 8] [--max-tokens 400] [--alpha 0.1 0.2 0.3 0.5]
                                   [--theta-v 0.05 0.1 0.2] [--theta-k 0.6] [--gamma 0.1]

SmolLM2-135M (fp32 from its GGUF) runs SQuAD v1.1 dev paragraphs (one prefill call each); every
layer's post-RoPE q, k, v are captured. ΔV is encoded like ΔK (delegates.reference.delta_encode:
error feedback, fp16 deltas, token 0 exact) with an absolute θ_v, or a per-layer relative one
(θ_v = α · std of that layer's values). Every key is then exact and every value is the
reconstructed v̂ (band included: a pessimistic bound on the error). The ΔK row (θ_k, γ, exact
band; exact values) is the accuracy the paper point already spends. Columns: S_v (zeros of ΔV),
and the attention output's NMSE against exact attention (mean and max over layers × paragraphs).
Progress on stderr, the markdown table on stdout.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch


def capture(paragraphs: int, max_tokens: int):
    """[paragraph][layer] -> (q [n,H,D], k [n,Hkv,D], v [n,Hkv,D]) from the dense eager model."""
    from delegates import attention_core
    from export.config import load_config
    from export.datasets import squad_paragraphs, squad_dev_path
    from export.pipeline import build_model, encode_prompt
    from export.sources import load_source

    cfg = load_config("smollm2_135m.yaml", ["quantization.linear=fp32", "attention.kind=dense",
                                            "attention.dense_kernel=deltallm", f"export.max_seq_len={max_tokens}",
                                            f"export.max_context_len={max_tokens}"])
    source = load_source(cfg)
    model = build_model(cfg, source).model
    ids = []
    for text in squad_paragraphs(squad_dev_path()):
        x = encode_prompt(source.tokenizer, text, source.args.bos_id)
        if 128 <= len(x) <= max_tokens:
            ids.append(x)
        if len(ids) == paragraphs:
            break
    print(f"{len(ids)} paragraphs, {sum(map(len, ids))} tokens", file=sys.stderr)
    cores = [m for m in model.modules() if isinstance(m, attention_core.ExactAttention)]
    seen = []
    hooks = [c.register_forward_hook(lambda mod, args, out: seen.append(tuple(a[0].clone() for a in args[:3])))
             for c in cores]
    out = []
    with torch.no_grad():
        for x in ids:
            seen.clear()
            model(torch.tensor([x]), torch.tensor([0]))
            out.append(list(seen))
    for h in hooks:
        h.remove()
    return out


def nmse(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got.double() - ref.double()) ** 2).sum() / (ref.double() ** 2).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--alpha", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--theta-v", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    ap.add_argument("--theta-k", type=float, default=0.6)
    ap.add_argument("--gamma", type=float, default=0.1)
    ns = ap.parse_args()
    from delegates.reference import band_width, delta_attention_vectorized, delta_encode, dense_attention

    data = capture(ns.paragraphs, ns.max_tokens)
    n_layers = len(data[0])
    v_std = [float(torch.cat([p[layer][2] for p in data]).std()) for layer in range(n_layers)]
    refs = [[dense_attention(q, k, v) for q, k, v in p] for p in data]
    print(f"value std per layer: {min(v_std):.3f}..{max(v_std):.3f}", file=sys.stderr)
    print("| what | threshold | S_m (ΔK) | S_v (ΔV) | output NMSE mean | output NMSE max |\n|---|---|---:|---:|---:|---:|")

    def row(what, label, theta_k, theta_v_of):
        zk = zv = n_el = 0
        errs = []
        for p, ref_p in zip(data, refs):
            for layer, ((q, k, v), ref) in enumerate(zip(p, ref_p)):
                theta_v = theta_v_of(layer)
                if theta_v > 0:
                    dv, _ = delta_encode(v, torch.zeros_like(v[0]), 0, theta_v)
                    zv += int((dv == 0).sum())
                    v = dv.cumsum(0)
                n_el += v.numel()
                if theta_k > 0:
                    got, _, counts = delta_attention_vectorized(q, k, v, theta_k, band_width(len(q), ns.gamma, 1 << 20, 4))
                    zk += counts.dk_zeros
                else:
                    got = dense_attention(q, k, v)
                errs.append(nmse(got, ref))
        print(f"| {what} | {label} | {zk / n_el:.1%} | {zv / n_el:.1%} | {statistics.fmean(errs):.2e} | "
              f"{max(errs):.2e} |", flush=True)

    row("ΔK only (paper point)", f"θ_k {ns.theta_k}, γ {ns.gamma}", ns.theta_k, lambda layer: 0.0)
    for t in ns.theta_v:
        row("ΔV only, absolute θ_v", f"θ_v {t}", 0.0, lambda layer, t=t: t)
    for a in ns.alpha:
        row("ΔV only, per-layer θ_v", f"α {a} (θ_v = α·std_v)", 0.0, lambda layer, a=a: a * v_std[layer])
    for a in ns.alpha[:2]:
        row("ΔK + ΔV", f"θ_k {ns.theta_k}, α {a}", ns.theta_k, lambda layer, a=a: a * v_std[layer])
    return 0


if __name__ == "__main__":
    sys.exit(main())
