"""Renderings shared by our result dataclasses (benchmarks, evaluations): JSON, JSON lines,
and CSV of the scalar fields. Each dataclass keeps its own markdown view."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import List, Sequence


def scalar_fields(cls) -> List[str]:
    """The fields of a dataclass whose annotation is a plain scalar (CSV columns), in order."""
    scalars = ("str", "int", "float", "bool", "Optional[float]", "Optional[int]", "Optional[str]")
    return [f.name for f in dataclasses.fields(cls) if f.type in scalars]


def to_json(rows: Sequence[object]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in rows], indent=2)


def to_jsonl(rows: Sequence[object]) -> str:
    return "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows)


def to_csv(rows: Sequence[object], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(fields)
    for r in rows:
        w.writerow([getattr(r, k) for k in fields])
    return buf.getvalue()
