"""Metrics and standard errors (lm-eval conventions: sample std / sqrt(n))."""
from __future__ import annotations

import collections
import math
import re
import string
from typing import List, Sequence, Tuple


def mean_stderr(xs: Sequence[float]) -> Tuple[float, float]:
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(xs) / n
    if n == 1:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def perplexity_stderr(nll_sums: Sequence[float], counts: Sequence[int]) -> Tuple[float, float]:
    """exp(Σ nll / Σ tokens) and its standard error, per-document ratio estimator (delta method)."""
    n, tot = len(nll_sums), sum(counts)
    if n == 0 or tot == 0:
        return float("nan"), float("nan")
    r = sum(nll_sums) / tot
    ppl = math.exp(r)
    if n == 1:
        return ppl, float("nan")
    mean_c = tot / n
    resid = [(s - r * c) / mean_c for s, c in zip(nll_sums, counts)]
    se_r = math.sqrt(sum(x * x for x in resid) / (n - 1) / n)
    return ppl, ppl * se_r


def _normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact(prediction: str, answers: List[str]) -> float:
    return max(float(_normalize_answer(prediction) == _normalize_answer(a)) for a in answers)


def _f1(prediction: str, truth: str) -> float:
    p, t = _normalize_answer(prediction).split(), _normalize_answer(truth).split()
    if not p or not t:
        return float(p == t)
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, answers: List[str]) -> float:
    return max(_f1(prediction, a) for a in answers)
