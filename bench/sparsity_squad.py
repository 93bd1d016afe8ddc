"""Delta-attention sparsity on real text: SmolLM2-135M (fp32 from its GGUF) over SQuAD v1.1 dev
paragraphs, counted by our kernel (eager model, same C core as the runtime).

    python bench/sparsity_squad.py [--paragraphs 24] [--max-tokens 384] [--theta 0.6 1.0] [--gamma 0.1]

Each paragraph is one prefill call from position 0 (band W = ⌊γ·n⌋). Prints S_m and S_c
(overall and the per-layer range) next to the independent implementation's reference figures.
"""
from __future__ import annotations

import argparse
import sys

import torch

REFERENCE = {0.3: (0.25, 0.21), 0.6: (0.46, 0.38), 1.0: (0.65, 0.54), 1.5: (0.80, 0.66)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--theta", type=float, nargs="+", default=[0.3, 0.6, 1.0, 1.5])
    ap.add_argument("--gamma", type=float, default=0.1)
    ns = ap.parse_args()

    from delegates import stats
    from export.config import load_config
    from export.datasets import squad_paragraphs, squad_dev_path
    from export.pipeline import build_model, encode_prompt
    from export.sources import load_source

    texts = squad_paragraphs(squad_dev_path())
    print(f"loading SmolLM2 ...", file=sys.stderr)
    base = load_config("smollm2_135m.yaml", ["quantization.linear=fp32", f"export.max_seq_len={ns.max_tokens}",
                                             f"export.max_context_len={ns.max_tokens}"])
    source = load_source(base)
    ids = []
    for t in texts:
        x = encode_prompt(source.tokenizer, t, source.args.bos_id)
        if len(x) <= ns.max_tokens:
            ids.append(x)
        if len(ids) == ns.paragraphs:
            break
    print(f"{len(ids)} paragraphs, {sum(map(len, ids))} tokens", file=sys.stderr)
    print("| theta | gamma | S_m | S_c | S_c layers min..max | reference S_m / S_c |\n|---:|---:|---:|---:|---|---|")
    for theta in ns.theta:
        cfg = load_config("smollm2_135m.yaml", ["quantization.linear=fp32", "attention.kind=delta",
                                                f"attention.theta={theta}", f"attention.gamma={ns.gamma}",
                                                f"export.max_seq_len={ns.max_tokens}",
                                                f"export.max_context_len={ns.max_tokens}"])
        model = build_model(cfg, source).model
        stats.reset()
        with torch.no_grad():
            for x in ids:
                model(torch.tensor([x]), torch.tensor([0]))
        s = stats.summary()["prefill"]
        per_layer = [layer["s_c"] for layer in s["layers"]]
        ref = REFERENCE.get(theta)
        ref_txt = f"{ref[0]:.0%} / {ref[1]:.0%}" if ref and ns.gamma == 0.1 else "-"
        print(f"| {theta} | {ns.gamma} | {s['total']['s_m']:.1%} | {s['total']['s_c']:.1%} | "
              f"{min(per_layer):.1%}..{max(per_layer):.1%} | {ref_txt} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
