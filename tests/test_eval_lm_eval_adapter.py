"""The lm-eval model class runs lm-eval's request objects through our scoring."""
from __future__ import annotations

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

import export.evaluate.lm_eval_adapter  # noqa: F401  (registers "deltallm")
from export.evaluate.runner import encode_pair


def _inst(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_registered_model_scores_like_our_runner():
    model = get_model("deltallm").create_from_arg_string(
        "config=tiny_llama.yaml,overrides=attention.kind=delta attention.theta=0.3")
    assert model.lm.is_delta and model.lm.cfg.attention.theta == 0.3
    reqs = [_inst("loglikelihood", "Question: what is up?\nAnswer:", " the sky"),
            _inst("loglikelihood", "Question: what is up?\nAnswer:", " the ground")]
    got = model.loglikelihood(reqs)
    ours = model.lm.score_many([encode_pair(model.lm, *r.args) for r in reqs])
    assert got == ours and got[0][0] != got[1][0] and all(ll < 0 for ll, _ in got)


def test_rolling_loglikelihood_covers_every_token_across_windows():
    model = get_model("deltallm").create_from_arg_string("config=tiny_llama.yaml")
    text = "abcdefghij" * 40           # 400 byte tokens: four windows of the 128-token context
    total = model.loglikelihood_rolling([_inst("loglikelihood_rolling", text)])[0]
    ids = model.lm.encode(text)
    w = model.lm.max_context_len
    windows = [((ids[s - 1:s] if s else [model.lm.bos_id]) + ids[s:s + w][:-1], ids[s:s + w])
               for s in range(0, len(ids), w)]
    assert sum(len(c) for _, c in windows) == len(ids) and len(windows) == 4
    by_hand = sum(float(model.lm.logprobs_last(f, len(c)).gather(1, torch.tensor(c)[:, None]).sum())
                  for f, c in windows)
    assert abs(total - by_hand) < 1e-3 and total < 0


def test_generate_until_stops_at_the_stop_string():
    model = get_model("deltallm").create_from_arg_string("config=tiny_llama.yaml")
    full = model.generate_until([_inst("generate_until", "hello", {"until": [], "max_gen_toks": 12})])[0]
    assert len(model.lm.encode(full)) <= 12 and full
    stop = full[len(full) // 2]
    cut = model.generate_until([_inst("generate_until", "hello", {"until": [stop], "max_gen_toks": 12})])[0]
    assert stop not in cut and full.startswith(cut)
