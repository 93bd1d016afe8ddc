"""One result dataclass with ordered, typed fields drives every output format (md, csv, json,
jsonl), like llama-bench. Markdown shows "avg ± std" and only the columns that vary."""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from export import records


@dataclass
class BenchResult:
    device: str
    model: str
    quantization: str
    attention: str
    threads: int
    prompt_tokens: int
    decode_tokens: int
    repetitions: int
    load_ms: float
    ttft_ms_avg: float
    ttft_ms_std: float
    prefill_tps_avg: float
    prefill_tps_std: float
    decode_tps_avg: float
    decode_tps_std: float
    peak_rss_mb: float
    prefill_s_m: Optional[float]
    prefill_s_c: Optional[float]
    decode_s_m: Optional[float]
    decode_s_c: Optional[float]
    thermal_c_before: Optional[float]
    cooldown_s: float
    runner: str = "python"              # native | python | android (results before protocol 2: python)
    abi: str = ""
    binary_sha256: str = ""             # the native runner's binary
    ttft_ms: List[float] = field(default_factory=list)
    prefill_tps: List[float] = field(default_factory=list)
    decode_tps: List[float] = field(default_factory=list)
    sparsity_layers: List[dict] = field(default_factory=list)
    device_info: Dict[str, object] = field(default_factory=dict)
    manifest: Dict[str, object] = field(default_factory=dict)
    cpufreq_before: Dict[str, int] = field(default_factory=dict)
    cpufreq_after: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SCALAR_FIELDS = [f.name for f in dataclasses.fields(BenchResult)
                 if f.type in ("str", "int", "float", "Optional[float]")]
PAIRS = {"ttft_ms": "ttft_ms", "prefill_tps": "prefill t/s", "decode_tps": "decode t/s"}


def mean_std(xs: List[float]):
    if not xs:
        return 0.0, 0.0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def to_json(results: List[BenchResult]) -> str:
    return records.to_json(results)


def to_jsonl(results: List[BenchResult]) -> str:
    return records.to_jsonl(results)


def to_csv(results: List[BenchResult]) -> str:
    return records.to_csv(results, SCALAR_FIELDS)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def to_markdown(results: List[BenchResult]) -> str:
    if not results:
        return ""
    identity = ["device", "runner", "model", "quantization", "attention", "threads", "prompt_tokens", "decode_tokens"]
    cols = [c for c in identity if len({getattr(r, c) for r in results}) > 1 or c in ("prompt_tokens", "decode_tokens")]
    header = cols + ["load ms", "ttft ms", "prefill t/s", "decode t/s", "S_c prefill", "S_c decode", "RSS MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if c in identity else "---:" for c in header) + "|"]
    for r in results:
        row = [_fmt(getattr(r, c)) for c in cols]
        row += [f"{r.load_ms:.1f}", f"{r.ttft_ms_avg:.2f} ± {r.ttft_ms_std:.2f}",
                f"{r.prefill_tps_avg:.2f} ± {r.prefill_tps_std:.2f}", f"{r.decode_tps_avg:.2f} ± {r.decode_tps_std:.2f}",
                "-" if r.prefill_s_c is None else f"{r.prefill_s_c:.1%}",
                "-" if r.decode_s_c is None else f"{r.decode_s_c:.1%}", f"{r.peak_rss_mb:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    same = [f"{c}: {getattr(results[0], c)}" for c in identity if c not in cols]
    return ("\n".join(lines) + "\n") + (f"\n{', '.join(same)}\n" if same else "")


FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json, "jsonl": to_jsonl}
