"""Sweeps: the dense baseline and a θ × γ × W_d grid (plus calibrated rows: per-layer θ, key scales) in one
run on the eager model (same C kernel and counters as the runtime), a table of accuracy
change vs S_c, a PNG plot, and the best point within an accuracy budget."""
from __future__ import annotations

import itertools
import math
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .compare import paired_change
from .results import EvalResult
from .tasks import MC_TASKS


@dataclass
class SettingSummary:
    setting: str
    quantization: str
    s_c_prefill: Optional[float]      # mean over the setting's tasks
    s_c_squad_all: Optional[float]    # SQuAD prefill + decode
    mc_drop: Optional[float]          # mean over multiple-choice tasks, points (dense − delta)
    mc_drop_se: Optional[float]       # its paired standard error (same documents), when samples exist
    ppl_increase_pct: Optional[float]
    squad_f1_drop: Optional[float]
    deltas: Dict[str, float]          # task -> change of its primary metric vs dense (points / %)


def _by_setting(results: List[EvalResult]) -> "OrderedDict[tuple, Dict[str, EvalResult]]":
    out: "OrderedDict[tuple, Dict[str, EvalResult]]" = OrderedDict()
    for r in results:
        out.setdefault((r.setting, r.backend, r.quantization), {})[r.task] = r
    return out


def _change(task: str, base: EvalResult, r: EvalResult) -> float:
    if r.metric == "perplexity":
        return (r.value / base.value - 1.0) * 100.0
    return (r.value - base.value) * 100.0


def _paired_se(base: EvalResult, r: EvalResult) -> Optional[float]:
    """Standard error (points) of the mean per-document difference, when both runs kept samples
    of the same documents (same count, same first document): much tighter than the two runs' own
    standard errors."""
    if not base.samples or len(base.samples) != len(r.samples) or base.first != r.first:
        return None
    return paired_change([x * 100.0 for x in base.samples], [x * 100.0 for x in r.samples])[1]


def summarize(results: List[EvalResult]) -> List[SettingSummary]:
    """One summary per delta setting, against the dense baseline of the same backend and quantization."""
    groups = _by_setting(results)
    out = []
    for (setting, backend, quant), tasks in groups.items():
        if setting == "dense":
            continue
        base = groups.get(("dense", backend, quant))
        if base is None:
            continue
        deltas = {t: _change(t, base[t], r) for t, r in tasks.items() if t in base}
        mc = [-deltas[t] for t in MC_TASKS if t in deltas]
        ses = [_paired_se(base[t], tasks[t]) for t in MC_TASKS if t in deltas]
        scs = [r.prefill_s_c for r in tasks.values() if r.prefill_s_c is not None]
        out.append(SettingSummary(
            setting=setting, quantization=quant, s_c_prefill=sum(scs) / len(scs) if scs else None,
            s_c_squad_all=tasks["squad"].all_s_c if "squad" in tasks else None,
            mc_drop=sum(mc) / len(mc) if mc else None,
            mc_drop_se=(math.sqrt(sum(x * x for x in ses)) / len(ses)) if ses and None not in ses else None,
            ppl_increase_pct=deltas.get("perplexity"),
            squad_f1_drop=-deltas["squad"] if "squad" in deltas else None, deltas=deltas))
    return out


def pick_best(summaries: List[SettingSummary], budget: float, ppl_budget: Optional[float] = None
              ) -> Optional[SettingSummary]:
    """The highest prefill S_c whose mean multiple-choice drop is <= budget points (and whose
    perplexity increase is <= ppl_budget percent, when perplexity was measured)."""
    ok = [s for s in summaries if s.s_c_prefill is not None
          and (s.mc_drop is None or s.mc_drop <= budget)
          and (ppl_budget is None or s.ppl_increase_pct is None or s.ppl_increase_pct <= ppl_budget)]
    return max(ok, key=lambda s: s.s_c_prefill) if ok else None


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def sweep_table(summaries: List[SettingSummary], tasks: List[str]) -> str:
    head = ["setting", "quant", "S_c prefill", "S_c SQuAD all", "mean MC drop", "ppl %"] + [f"Δ {t}" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for s in summaries:
        row = [s.setting, s.quantization, _f(s.s_c_prefill, ".1%"), _f(s.s_c_squad_all, ".1%"),
               _f(s.mc_drop, "+.2f") + ("" if s.mc_drop_se is None else f" ± {s.mc_drop_se:.2f}"),
               _f(s.ppl_increase_pct, "+.2f")]
        row += [_f(s.deltas.get(t), "+.2f") for t in tasks]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(summaries: List[SettingSummary], tasks: List[str], path) -> None:
    """Accuracy change (points; perplexity: %) vs prefill S_c, one panel per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import write_atomic

    cols = min(4, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for s in summaries:
            if task in s.deltas and s.s_c_prefill is not None:
                marker = "*" if "per-layer" in s.setting else "o"
                ax.scatter(s.s_c_prefill * 100, s.deltas[task], marker=marker, s=40)
                ax.annotate(s.setting.replace("delta ", ""), (s.s_c_prefill * 100, s.deltas[task]), fontsize=6)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(task)
        ax.set_xlabel("prefill S_c (%)")
        ax.set_ylabel("Δ perplexity (%)" if task == "perplexity" else "Δ metric (points)")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def cmd_sweep(ns) -> int:
    from ..config import load_config
    from ..sources import load_source
    from .calibrate import calibrate
    from .cli import _limits, _paths, emit
    from .lm import EagerLM
    from .runner import evaluate
    from .tasks import resolve_tasks

    names, limits, paths = resolve_tasks(ns.tasks), _limits(ns), _paths(ns)
    base_cfg = load_config(ns.config, list(ns.overrides) + ["attention.kind=dense"])
    source = load_source(base_cfg)
    settings = [] if ns.no_dense else [list(ns.overrides) + ["attention.kind=dense"]]
    for theta, gamma, wd in itertools.product(ns.theta, ns.gamma, ns.w_decode):
        settings.append(list(ns.overrides) + ["attention.kind=delta", f"attention.theta={theta}",
                                              f"attention.gamma={gamma}", f"attention.w_decode={wd}"])
    cal_dir = Path(ns.out) if ns.out else Path(tempfile.mkdtemp(prefix="deltallm-sweep-"))
    cal_dir.mkdir(parents=True, exist_ok=True)
    for target, alpha, gamma, wd in itertools.product(ns.per_layer_target, ns.key_alpha, ns.gamma, ns.w_decode):
        extra = ["attention.kind=delta", f"attention.gamma={gamma}", f"attention.w_decode={wd}"]
        cal = calibrate(load_config(ns.config, list(ns.overrides) + extra), source, target, alpha, quiet=ns.quiet)
        path = cal_dir / f"calibration_sc{target:g}_a{alpha:g}_g{gamma:g}_wd{wd}.json"
        cal.save(path)
        print(f"calibrated S_c {target:.0%}, α {alpha:g}, γ {gamma:g}: {path} "
              f"(calibration S_c {cal.calibration_s_c:.1%})", file=sys.stderr)
        settings.append(list(ns.overrides) + extra + [f"attention.calibration={path}"])
    results: List[EvalResult] = []
    for i, overrides in enumerate(settings, 1):
        cfg = load_config(ns.config, overrides)
        print(f"[{i}/{len(settings)}] {cfg.attention.kind.value} θ={cfg.attention.calibration or cfg.attention.theta} "
              f"γ={cfg.attention.gamma} W_d={cfg.attention.w_decode}", file=sys.stderr)
        results += evaluate(EagerLM(cfg, source), names, limits, paths, quiet=ns.quiet, skip=ns.skip)
    summaries = summarize(results)
    best = pick_best(summaries, ns.budget, ns.ppl_budget)
    table = sweep_table(summaries, names)
    verdict = (f"best within {ns.budget:g} points mean MC drop and {ns.ppl_budget:g} % perplexity: "
               + (f"{best.setting} (S_c {best.s_c_prefill:.1%})" if best else "none"))
    print(table + "\n" + verdict, file=sys.stderr)
    extra = {"sweep.md": table + "\n" + verdict + "\n"}
    if ns.out:
        Path(ns.out).mkdir(parents=True, exist_ok=True)
        plot(summaries, names, Path(ns.out) / "sweep.png")
    emit(results, ns, extra)
    return 0


def cmd_best(ns) -> int:
    from .results import load_results

    results = [r for path in ns.results for r in load_results(path)]
    summaries = summarize(results)
    tasks = list(OrderedDict.fromkeys(r.task for r in results))
    print(sweep_table(summaries, tasks))
    best = pick_best(summaries, ns.budget, ns.ppl_budget)
    print(f"best within {ns.budget:g} points and {ns.ppl_budget:g} % perplexity: "
          + (f"{best.setting} [{best.quantization}] S_c {best.s_c_prefill:.1%}" if best else "none"))
    return 0 if best else 1
