"""Score one model on tasks: metrics with standard errors and the kernel's sparsity counters."""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..progress import ProgressBar
from .lm import LanguageModel
from .metrics import mean_stderr, perplexity_stderr, squad_exact, squad_f1
from .results import EvalResult
from .tasks import TASKS

PERPLEXITY_MAX_TOKENS = 384
SQUAD_MAX_NEW_TOKENS = 32


def setting_label(cfg, thetas: Optional[List[float]] = None, key_alpha: Optional[float] = None) -> str:
    """e.g. "dense", "dense K fp16 V fp16", "delta θ0.6 γ0.1 Wd4", "delta θ per-layer (mean 1.23)
    γ0.1 Wd4 keys α0.5", "delta θ0.6 γ0.1 Wd4 V fp16 ΔK budget 0.75": every setting that moves the outputs."""
    a = cfg.attention
    v = f" V {a.v_cache.value}" if a.v_cache.value != "fp32" else ""
    if a.kind.value != "delta":
        return "dense" + (f" K {a.k_cache.value}" if a.k_cache.value != "fp32" else "") + v
    thetas = thetas or a.theta_per_layer
    theta = f"θ per-layer (mean {sum(thetas) / len(thetas):.2f})" if thetas else f"θ{a.theta:g}"
    keys = f" keys α{key_alpha:g}" if key_alpha is not None else ""
    budget = f" ΔK budget {a.dk_budget:g}" if a.dk_budget < 1 else ""
    return f"delta {theta} γ{a.gamma:g} Wd{a.w_decode}{keys}{v}{budget}"


def encode_pair(lm: LanguageModel, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """lm-eval's tokenization: context and continuation encoded together, the continuation's
    tokens are those after the context's (trailing spaces of the context move over). Returns
    (fed, cont): the tokens fed (BOS + context + continuation minus its last token, left-
    truncated to the context length) and the continuation's tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = lm.encode(context + continuation)
    ctx = lm.encode(context)
    cont = whole[len(ctx):]
    if not cont:
        cont, ctx = whole[-1:], whole[:-1]
    return (lm.with_bos(ctx) + cont)[:-1][-lm.max_context_len:], cont


def _requests(lm: LanguageModel, kind: str, docs: Sequence[object]):
    """Every (fed, cont) request of the task's documents, and per document its request indices."""
    reqs, index, per_doc = [], {}, []
    for doc in docs:
        if kind == "mc":
            pairs = [encode_pair(lm, c, x) for c, x in zip(doc.contexts, doc.continuations)]
        elif kind == "loglik":
            pairs = [encode_pair(lm, doc.context, doc.continuation)]
        else:   # perplexity: every token after BOS, one prefill (lm-eval's rolling loglikelihood)
            pairs = [(doc.ids[:-1], doc.ids[1:])]
        ids = []
        for fed, cont in pairs:
            key = (tuple(fed), tuple(cont))
            if key not in index:
                index[key] = len(reqs)
                reqs.append((fed, cont))
            ids.append(index[key])
        per_doc.append(ids)
    return reqs, per_doc


def _sparsity(lm: LanguageModel) -> Dict[str, object]:
    if not lm.is_delta:
        return {}
    from delegates import stats
    s = stats.summary()
    pre = s["prefill"]
    return {"prefill_s_m": pre["total"]["s_m"], "prefill_s_c": pre["total"]["s_c"],
            "all_s_m": s["all"]["s_m"], "all_s_c": s["all"]["s_c"],
            "prefill_s_c_layers": [round(x["s_c"], 5) for x in pre["layers"]],
            "prefill_s_m_layers": [round(x["s_m"], 5) for x in pre["layers"]]}


def evaluate_task(lm: LanguageModel, name: str, docs: Sequence[object], quiet: bool = False) -> EvalResult:
    task = TASKS[name]
    if lm.is_delta:
        from delegates import stats
        stats.reset()
    t0, tok0 = time.perf_counter(), lm.tokens_processed
    metrics: Dict[str, List[float]] = {}
    n = len(docs)
    if task.kind in ("mc", "loglik", "perplexity"):
        reqs, per_doc = _requests(lm, task.kind, docs)
        bar = ProgressBar(f"{name} [{lm.label}] requests", len(reqs), quiet=quiet)
        scores = lm.score_many(reqs, bar.update)
    if task.kind == "mc":
        acc, acc_norm = [], []
        for doc, ids in zip(docs, per_doc):
            lls = [scores[i][0] for i in ids]
            normed = [ll / max(len(x), 1) for ll, x in zip(lls, doc.continuations)]
            acc.append(float(max(range(len(lls)), key=lls.__getitem__) == doc.gold))
            acc_norm.append(float(max(range(len(normed)), key=normed.__getitem__) == doc.gold))
        metrics = {"acc": list(mean_stderr(acc)), "acc_norm": list(mean_stderr(acc_norm))}
        samples = acc_norm if task.primary == "acc_norm" else acc
    elif task.kind == "loglik":
        hits = [float(scores[ids[0]][1]) for ids in per_doc]
        m, se = mean_stderr([-scores[ids[0]][0] for ids in per_doc])
        metrics = {"acc": list(mean_stderr(hits)), "perplexity": [math.exp(m), math.exp(m) * se]}
        samples = hits
    elif task.kind == "perplexity":
        sums = [-scores[ids[0]][0] for ids in per_doc]
        metrics = {"perplexity": list(perplexity_stderr(sums, [len(d.ids) - 1 for d in docs]))}
        samples = sums   # per-document NLL (nats)
    elif task.kind == "generate":
        bar = ProgressBar(f"{name} [{lm.label}]", len(docs), quiet=quiet)
        prompts = [lm.with_bos(lm.encode(d.prompt))[-(lm.max_context_len - SQUAD_MAX_NEW_TOKENS):] for d in docs]
        gens = lm.greedy_many(prompts, SQUAD_MAX_NEW_TOKENS, stop=lambda new: "\n" in lm.decode(new),
                              on_done=bar.update)
        preds = [lm.decode(g).split("\n")[0].strip() for g in gens]
        em = [squad_exact(p, d.answers) for p, d in zip(preds, docs)]
        f1 = [squad_f1(p, d.answers) for p, d in zip(preds, docs)]
        metrics = {"exact_match": list(mean_stderr(em)), "f1": list(mean_stderr(f1))}
        samples = f1
    value, stderr = metrics[task.primary]
    cfg = lm.cfg
    delta = lm.is_delta
    thetas = lm.theta_per_layer if delta else None
    return EvalResult(
        setting=setting_label(cfg, thetas, lm.key_alpha), backend=lm.label, quantization=cfg.quantization.linear.value, task=name,
        metric=task.primary, value=value, stderr=stderr, n=n,
        theta=cfg.attention.theta if delta and not thetas else None,
        gamma=cfg.attention.gamma if delta else None, w_decode=cfg.attention.w_decode if delta else None,
        **{"prefill_s_m": None, "prefill_s_c": None, "all_s_m": None, "all_s_c": None, **_sparsity(lm)},
        tokens=lm.tokens_processed - tok0, seconds=round(time.perf_counter() - t0, 2), metrics=metrics,
        theta_per_layer=list(thetas) if thetas else None,
        samples=[round(x, 6) for x in samples])


def prepare_docs(lm: LanguageModel, name: str, limit: Optional[int], path=None, skip: int = 0) -> List[object]:
    """The task's documents after the first `skip` (at most `limit`); perplexity keeps paragraphs of
    <= 384 tokens (`skip` and `limit` count kept paragraphs)."""
    docs = TASKS[name].docs(path)
    if TASKS[name].kind == "perplexity":
        kept = []
        for d in docs:
            ids = lm.with_bos(lm.encode(d.text))
            if len(ids) <= min(PERPLEXITY_MAX_TOKENS, lm.max_context_len):
                d.ids = ids
                kept.append(d)
            if limit is not None and len(kept) >= skip + limit:
                break
        docs = kept
    if skip and skip >= len(docs):
        raise ConfigError("--skip", f"{name} has {len(docs)} documents; skipping {skip} leaves none")
    docs = docs[skip:]
    return docs if limit is None else docs[:limit]


def evaluate(lm: LanguageModel, names: Sequence[str], limits: Dict[str, Optional[int]],
             paths: Optional[Dict[str, str]] = None, quiet: bool = False, skip: int = 0) -> List[EvalResult]:
    """Each task on its documents after the first `skip` (at most limits[task])."""
    out = []
    for name in names:
        docs = prepare_docs(lm, name, limits.get(name), (paths or {}).get(name), skip)
        r = evaluate_task(lm, name, docs, quiet=quiet)
        r.first = skip
        out.append(r)
    return out
