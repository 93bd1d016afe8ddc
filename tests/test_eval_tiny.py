"""Scoring on a tiny random model: packing equals one-by-one, the program equals eager, counters."""
from __future__ import annotations

import random

import pytest
import torch

from export.config import load_config
from export.evaluate.lm import EagerLM, PteLM
from export.evaluate.runner import encode_pair

from tests.conftest import export_with_cli


def _requests(n=12, seed=0, vocab=500, max_len=40):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        fed = [rng.randrange(3, vocab) for _ in range(rng.randrange(2, max_len))]
        k = rng.randrange(1, len(fed) + 1)
        out.append((fed, [rng.randrange(3, vocab) for _ in range(k)]))
    return out


@pytest.mark.parametrize("overrides", [[], ["attention.kind=delta", "attention.theta=0.3", "attention.gamma=0.1"]])
def test_packed_scoring_equals_one_by_one(overrides):
    from delegates import stats

    lm = EagerLM(load_config("tiny_llama.yaml", overrides))
    reqs = _requests()
    stats.reset()
    one = [(float(lm.logprobs_last(f, len(c)).gather(1, torch.tensor(c)[:, None]).sum()), None) for f, c in reqs]
    counts_one = stats.summary()["prefill"]["total"]
    stats.reset()
    packed = lm.score_many(reqs)
    counts_packed = stats.summary()["prefill"]["total"]
    for (a, _), (b, _) in zip(one, packed):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))
    if overrides:
        assert counts_one == counts_packed and counts_one["s_c"] > 0


def test_same_input_choices_run_once():
    lm = EagerLM(load_config("tiny_llama.yaml"))
    fed = [5, 6, 7, 8]
    before = lm.tokens_processed
    a, b = lm.score_many([(fed, [9]), (fed, [10])])
    assert lm.tokens_processed - before == len(fed) and a != b


def test_lm_eval_tokenisation_moves_trailing_space():
    lm = EagerLM(load_config("tiny_llama.yaml"))
    fed1, cont1 = encode_pair(lm, "Answer: ", "yes")
    fed2, cont2 = encode_pair(lm, "Answer:", " yes")
    assert (fed1, cont1) == (fed2, cont2)
    assert fed1[0] == lm.bos_id and lm.decode(cont1) == " yes"


@pytest.fixture(scope="module")
def tiny_delta_full_logits(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_delta_full")
    m = export_with_cli("tiny_llama.yaml", out, "attention.kind=delta", "attention.theta=0.3",
                        "export.full_logits=true")
    return out / m["pte"]


def test_program_scores_match_eager_and_count_the_same(tiny_delta_full_logits):
    from delegates import stats

    pte = PteLM(tiny_delta_full_logits)
    eager = EagerLM(pte.cfg)
    reqs = _requests(n=8, seed=1, max_len=30)
    stats.reset()
    got = pte.score_many(reqs)
    c_pte = stats.summary()["prefill"]["total"]
    stats.reset()
    ref = eager.score_many(reqs)
    c_eager = stats.summary()["prefill"]["total"]
    for (a, ga), (b, gb) in zip(got, ref):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(b))
    assert c_pte["s_c"] == pytest.approx(c_eager["s_c"], abs=0.02) and c_pte["s_c"] > 0
    gen_p = pte.greedy([1, 5, 6, 7], 6, stop=lambda new: False)
    gen_e = eager.greedy([1, 5, 6, 7], 6, stop=lambda new: False)
    assert gen_p == gen_e and len(gen_p) >= 1


def test_program_without_full_logits_is_refused(tiny_llama_fp32):
    from export.errors import ConfigError

    out, manifest = tiny_llama_fp32
    with pytest.raises(ConfigError, match="full_logits=true"):
        PteLM(out / manifest["pte"])


@pytest.mark.parametrize("overrides", [[], ["attention.kind=delta", "attention.theta=0.3", "attention.gamma=0.1"]])
def test_batched_generation_equals_one_by_one(overrides):
    from delegates import stats

    lm = EagerLM(load_config("tiny_llama.yaml", overrides))
    lm.GEN_SLOTS = 3
    rng = random.Random(2)
    prompts = [[1] + [rng.randrange(3, 500) for _ in range(rng.randrange(1, 30))] for _ in range(7)]
    prompts.append([1] + [rng.randrange(3, 500) for _ in range(40)])      # > max_seq_len: chunked, alone
    stop = lambda new: len(new) >= 2 and new[-1] % 7 == 0                  # noqa: E731  (stops at different steps)
    stats.reset()
    one = [lm.greedy(p, 9, stop) for p in prompts]
    c_one = stats.summary()
    stats.reset()
    many = lm.greedy_many(prompts, 9, stop)
    c_many = stats.summary()
    assert many == one and len({len(g) for g in one}) > 1
    if overrides:
        assert c_many["prefill"]["total"] == c_one["prefill"]["total"]
        assert c_many["decode"]["total"] == c_one["decode"]["total"] and c_one["decode"]["total"]["macs_dense"] > 0
