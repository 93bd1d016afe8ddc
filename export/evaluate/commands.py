"""The `run` and `data` commands."""
from __future__ import annotations

import sys
from typing import List

from ..errors import ConfigError
from .results import EvalResult, format_pct


def cmd_data(ns) -> int:
    from .data import fetch_all
    from .tasks import TASKS

    paths = fetch_all()
    for name, path in paths.items():
        line = f"{name}: {path}"
        if ns.check:
            tasks = [t for t in TASKS.values() if t.data == name]
            line += "  " + ", ".join(f"{t.name} {len(t.docs(path))} docs" for t in tasks)
        print(line)
    return 0


AGREEMENT_MAX_Z = 1.0        # |eager − pte| <= one standard error of the task
AGREEMENT_MAX_SC_DIFF = 0.005


def agreement(eager: List[EvalResult], pte: List[EvalResult]) -> str:
    """Markdown: per task, eager vs .pte value, difference, difference / stderr, S_c of both, and
    whether they agree within the stated tolerance (|diff| <= 1 stderr, S_c within 0.5 points).
    Quantized programs cannot agree exactly: XNNPACK rounds dynamic int8 activations differently
    from torchao's reference ops, which flips near-tied choices and greedy tokens."""
    lines = ["| task | metric | eager | pte | diff | diff / stderr | S_c eager | S_c pte | agree |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for e, p in zip(eager, pte):
        scale = 1.0 if e.metric == "perplexity" else 100.0
        diff = (p.value - e.value) * scale
        z = abs(p.value - e.value) / e.stderr if e.stderr and e.stderr == e.stderr else float("nan")
        sc_ok = e.prefill_s_c is None or abs(e.prefill_s_c - p.prefill_s_c) <= AGREEMENT_MAX_SC_DIFF
        ok = (z <= AGREEMENT_MAX_Z or p.value == e.value) and sc_ok
        lines.append(f"| {e.task} | {e.metric} | {e.value * scale:.2f} | {p.value * scale:.2f} | {diff:+.2f} | "
                     f"{z:.2f} | {format_pct(e.prefill_s_c)} | {format_pct(p.prefill_s_c)} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines) + "\n"


def cmd_run(ns) -> int:
    from ..config import load_config
    from .cli import _limits, _paths, emit
    from .lm import EagerLM, PteLM
    from .runner import evaluate
    from .tasks import resolve_tasks

    backend = ns.backend or ("pte" if ns.pte else "eager")
    if backend in ("pte", "both") and not ns.pte:
        raise ConfigError("--pte", f"--backend {backend} needs --pte PATH")
    if backend == "eager" and not ns.config:
        raise ConfigError("--config", "the eager backend needs --config (or give --pte)")
    names, limits, paths = resolve_tasks(ns.tasks), _limits(ns), _paths(ns)
    results, extra = [], {}
    pte_lm = PteLM(ns.pte) if ns.pte else None
    if backend in ("eager", "both"):
        cfg = load_config(ns.config, ns.overrides) if ns.config else pte_lm.cfg
        eager = evaluate(EagerLM(cfg), names, limits, paths, quiet=ns.quiet, skip=ns.skip)
        results += eager
    if pte_lm is not None and backend in ("pte", "both"):
        pte = evaluate(pte_lm, names, limits, paths, quiet=ns.quiet, skip=ns.skip)
        results += pte
    if backend == "both":
        extra["agreement.md"] = agreement(eager, pte)
        print(extra["agreement.md"], file=sys.stderr)
    emit(results, ns, extra)
    return 0
