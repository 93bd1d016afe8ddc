"""`compare`: paired differences between evaluation runs on the same documents.

Two runs of the same task score the same documents, so the change of a metric has a standard
error from the per-document differences (the paired standard error), far tighter than either
run's own. A quantized program flips greedy tokens and near-tied choices under any numeric
change, so a change is read against that: `z` is the change over its paired standard error,
`up` / `down` count the documents whose score moved. `within 1 SE` is the looser test of our
accuracy targets: |change| <= the base run's standard error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import records
from ..errors import ConfigError
from .metrics import mean_stderr
from .results import EvalResult, load_results

SIGNIFICANT_Z = 2.0


def paired_change(base: Sequence[float], other: Sequence[float]) -> Tuple[float, float, int, int]:
    """Mean of other − base over the documents, its standard error, and how many documents
    went up and down. Both lists score the same documents in the same order."""
    if len(base) != len(other):
        raise ValueError(f"paired samples differ in length ({len(base)} vs {len(other)})")
    diffs = [b - a for a, b in zip(base, other)]
    m, se = mean_stderr(diffs)
    return m, se, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)


@dataclass
class Comparison:
    setting: str            # the compared run's setting
    base_setting: str
    backend: str
    quantization: str
    task: str
    metric: str             # perplexity rows compare the per-document NLL (nats)
    n: int                  # documents compared (the first n of both runs)
    base: float             # points (accuracy, F1) or mean NLL per document
    value: float
    change: float
    paired_se: Optional[float]   # None for one document
    z: Optional[float]      # change / paired_se (None when that is 0 or undefined)
    up: int
    down: int
    base_stderr: float      # the base run's own standard error, same units
    within_1se: bool        # |change| <= base_stderr
    verdict: str            # "better" / "worse" (|z| >= 2) or "no difference"


def _scale(metric: str) -> float:
    return 1.0 if metric == "perplexity" else 100.0


def compare_one(base: EvalResult, other: EvalResult) -> Comparison:
    """other against base, on the first min(n) documents of both."""
    if not base.samples or not other.samples:
        missing = base if not base.samples else other
        raise ConfigError("results", f"the {missing.task} row of setting {missing.setting!r} kept no per-document "
                                     "samples (results written before samples were recorded); re-run it")
    if base.first != other.first:
        raise ConfigError("results", f"the {base.task} rows start at different documents ({base.setting!r} at "
                                     f"{base.first}, {other.setting!r} at {other.first}, --skip); pair runs of the "
                                     "same documents")
    n = min(len(base.samples), len(other.samples))
    scale = _scale(base.metric)
    a, b = [x * scale for x in base.samples[:n]], [x * scale for x in other.samples[:n]]
    change, se, up, down = paired_change(a, b)
    higher_is_better = base.metric != "perplexity"
    z: Optional[float] = None
    if n < 2:
        se, verdict = None, "too few documents"
    elif se == 0 and change == 0 or se > 0 and abs(change / se) < SIGNIFICANT_Z:
        verdict = "no difference"
    else:   # |z| >= 2, or every document moved by the same amount (se 0)
        verdict = "better" if (change > 0) == higher_is_better else "worse"
    if se:
        z = change / se
    base_se = mean_stderr(a)[1]
    base_se = 0.0 if base_se != base_se else base_se
    return Comparison(setting=other.setting, base_setting=base.setting, backend=other.backend,
                      quantization=other.quantization, task=other.task,
                      metric="nll/doc" if base.metric == "perplexity" else base.metric, n=n,
                      base=sum(a) / n, value=sum(b) / n, change=change, paired_se=se, z=z, up=up, down=down,
                      base_stderr=base_se, within_1se=abs(change) <= base_se, verdict=verdict)


def compare(base_rows: List[EvalResult], other_rows: List[EvalResult]) -> List[Comparison]:
    """Every row of other_rows against the base row of its task (one base setting per task)."""
    by_task: Dict[str, EvalResult] = {}
    for r in base_rows:
        if r.task in by_task:
            raise ConfigError("base", f"the base results hold more than one {r.task} row ({by_task[r.task].setting!r}, "
                                      f"{r.setting!r}); give a results file of one setting")
        by_task[r.task] = r
    out = [compare_one(by_task[r.task], r) for r in other_rows if r.task in by_task]
    if not out:
        raise ConfigError("results", f"no task in common with the base (base: {', '.join(by_task) or 'none'}; "
                                     f"compared: {', '.join(sorted({r.task for r in other_rows})) or 'none'})")
    return out


def _f(x: Optional[float]) -> str:
    return "-" if x is None or x != x else f"{x:+.2f}"


def to_markdown(rows: List[Comparison]) -> str:
    head = ["setting", "vs", "backend", "quant", "task", "metric", "n", "base", "value", "change", "paired SE", "z",
            "docs up / down", "within 1 SE", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in rows:
        lines.append("| " + " | ".join([
            c.setting, c.base_setting, c.backend, c.quantization, c.task, c.metric, str(c.n), f"{c.base:.2f}",
            f"{c.value:.2f}", f"{c.change:+.2f}", _f(c.paired_se).lstrip("+"), _f(c.z), f"{c.up} / {c.down}",
            "yes" if c.within_1se else "no", c.verdict]) + " |")
    return "\n".join(lines) + "\n"


FORMATS = {"md": to_markdown, "csv": lambda rows: records.to_csv(rows, records.scalar_fields(Comparison)),
           "json": records.to_json, "jsonl": records.to_jsonl}


def cmd_compare(ns) -> int:
    from pathlib import Path

    def load(path: str) -> List[EvalResult]:
        p = Path(path)
        if p.is_dir():
            p = p / "results.json"
        if not p.is_file():
            raise ConfigError("results", f"{str(p)!r} does not exist (give results.json or its folder)")
        try:
            return load_results(p)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError("results", f"{str(p)!r} is not an evaluation results file ({e})") from e

    base = load(ns.base)
    rows = compare(base, [r for path in ns.results for r in load(path)])
    print(FORMATS[ns.format](rows), end="")
    return 0
