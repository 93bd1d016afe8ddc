"""One result dataclass, one row per (setting, backend, task), drives md / csv / json / jsonl."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import records


@dataclass
class EvalResult:
    setting: str                 # e.g. "dense", "delta θ0.6 γ0.1 Wd4", "delta per-layer θ"
    backend: str                 # eager | pte
    quantization: str
    task: str
    metric: str                  # the task's primary metric
    value: float
    stderr: float
    n: int
    theta: Optional[float]
    gamma: Optional[float]
    w_decode: Optional[int]
    prefill_s_m: Optional[float]
    prefill_s_c: Optional[float]
    all_s_m: Optional[float]     # prefill + decode (generation tasks)
    all_s_c: Optional[float]
    tokens: int
    seconds: float
    first: int = 0               # index of the first document scored (--skip): runs pair only from the same one
    metrics: Dict[str, List[float]] = field(default_factory=dict)    # name -> [value, stderr]
    prefill_s_c_layers: List[float] = field(default_factory=list)
    prefill_s_m_layers: List[float] = field(default_factory=list)
    theta_per_layer: Optional[List[float]] = None
    samples: List[float] = field(default_factory=list)   # per document: the primary metric (paired comparisons)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SCALAR_FIELDS = records.scalar_fields(EvalResult)


def to_json(results: List[EvalResult]) -> str:
    return records.to_json(results)


def to_jsonl(results: List[EvalResult]) -> str:
    return records.to_jsonl(results)


def to_csv(results: List[EvalResult]) -> str:
    return records.to_csv(results, SCALAR_FIELDS)


def format_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1%}"


def format_value(r: EvalResult) -> str:
    scale = 1.0 if r.metric == "perplexity" else 100.0
    err = "" if r.stderr != r.stderr else f" ± {r.stderr * scale:.2f}"   # NaN: no stderr
    return f"{r.value * scale:.2f}{err}"


def to_markdown(results: List[EvalResult]) -> str:
    """One row per task and setting: metric ± stderr, S_m / S_c (prefill, and all for generation)."""
    header = ["setting", "backend", "quant", "task", "metric", "value", "n", "S_m prefill", "S_c prefill",
              "S_c all", "s"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append("| " + " | ".join([r.setting, r.backend, r.quantization, r.task, r.metric, format_value(r),
                                        str(r.n), format_pct(r.prefill_s_m), format_pct(r.prefill_s_c), format_pct(r.all_s_c),
                                        f"{r.seconds:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json, "jsonl": to_jsonl}


def load_results(path) -> List[EvalResult]:
    from pathlib import Path

    text = Path(path).read_text()
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    return [EvalResult.from_dict(d) for d in rows]


def to_wide_markdown(results: List[EvalResult]) -> str:
    """One row per (setting, backend, quantization), one column per task (value ± stderr, n),
    then the mean prefill S_c over the row's tasks and SQuAD's prefill + decode S_c."""
    tasks: List[str] = []
    rows: Dict[tuple, Dict[str, EvalResult]] = {}
    for r in results:
        if r.task not in tasks:
            tasks.append(r.task)
        rows.setdefault((r.setting, r.backend, r.quantization), {})[r.task] = r
    head = ["setting", "backend", "quant"] + [f"{t} ({next(r for r in results if r.task == t).metric})"
                                              for t in tasks] + ["S_c prefill", "S_c SQuAD all"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for (setting, backend, quant), by_task in rows.items():
        cells = [f"{format_value(by_task[t])} (n={by_task[t].n})" if t in by_task else "-" for t in tasks]
        scs = [r.prefill_s_c for r in by_task.values() if r.prefill_s_c is not None]
        squad = by_task.get("squad")
        cells += [format_pct(sum(scs) / len(scs)) if scs else "-", format_pct(squad.all_s_c) if squad else "-"]
        lines.append("| " + " | ".join([setting, backend, quant] + cells) + " |")
    return "\n".join(lines) + "\n"
