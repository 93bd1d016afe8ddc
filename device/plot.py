"""PNG plots of benchmark results: latency vs prompt length, and sparsity per layer."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import List

from .results import BenchResult


def plot_results(results: List[BenchResult], out_dir: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    series = defaultdict(list)
    for r in results:
        series[(r.model, r.attention, r.decode_tokens)].append((r.prompt_tokens, r.ttft_ms_avg, r.ttft_ms_std))
    for (model, attention, decode), pts in sorted(series.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=f"{model} {attention}")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title("Prefill latency vs prompt length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "latency_vs_prompt.png"))

    with_layers = [r for r in results if r.sparsity_layers]
    if with_layers:
        r = max(with_layers, key=lambda x: x.prompt_tokens)
        fig, ax = plt.subplots(figsize=(6, 4))
        for phase, marker in (("prefill", "o"), ("decode", "s")):
            layers = [x for x in r.sparsity_layers if x["phase"] == phase]
            ax.plot([x["layer"] for x in layers], [x["s_c"] for x in layers], marker=marker, label=f"S_c {phase}")
            ax.plot([x["layer"] for x in layers], [x["s_m"] for x in layers], marker=marker, linestyle="--",
                    label=f"S_m {phase}")
        ax.set_xlabel("layer")
        ax.set_ylabel("sparsity")
        ax.set_ylim(0, 1)
        ax.set_title(f"Delta-attention sparsity per layer ({r.prompt_tokens} prompt tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "sparsity_per_layer.png"))
    return written


def _save(fig, path):
    """Write a figure atomically (no half-written PNG) and free it."""
    import matplotlib.pyplot as plt

    from export.atomic import write_atomic

    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path
