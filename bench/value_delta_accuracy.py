"""Delta on values (ΔV, the issue's item 4): its accuracy cost measured with export.evaluate's own
scoring, after bench/value_sparsity.py screened it by attention-output error.

    python bench/value_delta_accuracy.py [--tasks perplexity] [--limit 100] [--alpha 0.1 0.2]
                                         [--theta-k 0.6] [--gamma 0.1] [--json]

SmolLM2-135M (fp32 from its GGUF) in the eager model of `python -m export.evaluate`. ΔV is applied
where a ΔV kernel would see it: a forward pre-hook on every layer's attention core replaces the
call's values v by the values v̂ that ΔV reconstructs (v̂_t = Σ_{τ≤t} Δv_τ, encoded like ΔK by
delegates.reference.delta_encode: error feedback, fp16 deltas, token 0 exact), so the V cache and
P·V use v̂; since o = Σ_τ Δv_τ · (Σ_{j≥τ} p_j) = Σ_j p_j · v̂_j, that is exactly the output of a
suffix-sum ΔV kernel. θ_v is per layer, α · (std of that layer's values on SQuAD paragraphs),
as in the screening (an absolute θ_v erased layer 0's values there). Every value is v̂, the exact
band included: a pessimistic bound. Rows: dense; ΔK at the paper point (θ_k, γ, W_d 4); ΔK + ΔV
and ΔV alone at each α. S_v = zeros of ΔV / elements over the scored calls. Prefill tasks only
(perplexity and the multiple-choice / loglikelihood tasks; SQuAD's generation is not hooked).
Progress on stderr, the table (or --json rows) on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PREFILL_TASKS = ("perplexity", "winogrande", "piqa", "arc_easy", "hellaswag", "boolq", "lambada")


class ValueDelta:
    """Pre-hooks replacing each attention core's values by ΔV's reconstruction v̂ (per-core
    reference value carried across calls of one sequence; start 0 begins a new one)."""

    def __init__(self, cores, theta_v):
        from delegates.reference import delta_encode

        self.encode, self.zeros, self.elements = delta_encode, 0, 0
        self.state = {}   # core -> (next position, v̂ of the last token)
        self.hooks = [core.register_forward_pre_hook(self._hook(core, t)) for core, t in zip(cores, theta_v)]

    def _hook(self, core, theta_v: float):
        def hook(module, args):
            q, k, v, start = args
            pos = int(start)
            if v.shape[0] != 1:
                raise SystemExit(f"error: the ΔV hook expects batch 1, got values of shape {tuple(v.shape)}")
            if pos == 0:
                ref = torch.zeros_like(v[0, 0], dtype=torch.float32)
            else:
                nxt, ref = self.state.get(core, (None, None))
                if nxt != pos:
                    raise SystemExit(f"error: the ΔV hook saw a call at position {pos} after one ending at {nxt}")
            dv, ref_end = self.encode(v[0], ref, pos, theta_v)
            self.state[core] = (pos + v.shape[1], ref_end)
            self.zeros += int((dv == 0).sum())
            self.elements += dv.numel()
            v_hat = (ref.double() + dv.double().cumsum(0)).to(v.dtype)   # v̂_t = v̂_{start-1} + Σ Δv
            return q, k, v_hat.unsqueeze(0), start
        return hook

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["perplexity"], choices=PREFILL_TASKS)
    ap.add_argument("--limit", type=int, default=100, help="documents per task")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.1, 0.2], help="θ_v = α · std of the layer's values")
    ap.add_argument("--theta-k", type=float, default=0.6)
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--std-paragraphs", type=int, default=8, help="SQuAD paragraphs for the per-layer value std")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if ns.limit < 1 or ns.std_paragraphs < 1 or any(not a > 0 for a in ns.alpha) or not ns.theta_k > 0:
        raise SystemExit("error: --limit and --std-paragraphs must be >= 1, --alpha and --theta-k > 0")
    from delegates import attention_core
    from export.config import load_config
    from export.evaluate.compare import paired_change
    from export.evaluate.lm import EagerLM
    from export.evaluate.runner import evaluate
    from export.sources import load_source
    from value_sparsity import capture

    data = capture(ns.std_paragraphs, 384)
    v_std = [float(torch.cat([p[layer][2] for p in data]).std()) for layer in range(len(data[0]))]
    print(f"value std per layer: {min(v_std):.3f}..{max(v_std):.3f}", file=sys.stderr)
    base = ["quantization.linear=fp32"]
    dense = base + ["attention.kind=dense", "attention.dense_kernel=deltallm"]
    delta = base + ["attention.kind=delta", f"attention.theta={ns.theta_k}", f"attention.gamma={ns.gamma}",
                    "attention.w_decode=4"]
    settings = [("dense", dense, None), (f"ΔK θ_k {ns.theta_k:g} γ {ns.gamma:g}", delta, None)]
    for a in ns.alpha:
        settings += [(f"ΔK θ_k {ns.theta_k:g} γ {ns.gamma:g} + ΔV α {a:g}", delta, a), (f"ΔV α {a:g}", dense, a)]
    source = None
    rows = []
    for label, overrides, alpha in settings:
        print(f"{label} ...", file=sys.stderr)
        cfg = load_config("smollm2_135m.yaml", overrides)
        source = source or load_source(cfg)
        lm = EagerLM(cfg, source)
        cores = [m for m in lm.model.modules()
                 if isinstance(m, (attention_core.DeltaAttention, attention_core.ExactAttention))]
        hook = ValueDelta(cores, [alpha * s for s in v_std]) if alpha else None
        try:
            for task in ns.tasks:   # one at a time: S_v counts that task's calls only
                if hook:
                    hook.zeros = hook.elements = 0
                r, = evaluate(lm, [task], {task: ns.limit}, quiet=True)
                rows.append(dict(setting=label, task=r.task, metric=r.metric, value=r.value, stderr=r.stderr, n=r.n,
                                 s_m=r.prefill_s_m, s_v=hook.zeros / hook.elements if hook else None,
                                 samples=r.samples))
        finally:
            if hook:
                hook.remove()
    for r in rows:   # paired change against dense on the same documents
        ref = next(x for x in rows if x["setting"] == "dense" and x["task"] == r["task"])
        r["change"] = r["value"] - ref["value"]
        if r["metric"] == "perplexity":
            r["change"] = 100.0 * r["change"] / ref["value"]
        se = paired_change(ref["samples"], r["samples"])[1]
        r["paired_se"] = se if se == se else 0.0   # NaN for one document
    if ns.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "samples"} for r in rows], indent=1))
        return 0
    print("| setting | task | metric | value ± se | change vs dense | paired se of the per-doc change | S_m (ΔK) | S_v (ΔV) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    def pct(x):
        return f"{x:.1%}" if x is not None else "-"

    for r in rows:   # perplexity as is (change in %, per-document sums in nats), accuracies in points
        ppl = r["metric"] == "perplexity"
        scale, unit, se_unit = (1.0, " %", " nats") if ppl else (100.0, " points", " points")
        print(f"| {r['setting']} | {r['task']} | {r['metric']} | {r['value'] * scale:.2f} ± {r['stderr'] * scale:.2f} "
              f"| {r['change'] * scale:+.2f}{unit} | {r['paired_se'] * scale:.3f}{se_unit} | {pct(r['s_m'])} "
              f"| {pct(r['s_v'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
