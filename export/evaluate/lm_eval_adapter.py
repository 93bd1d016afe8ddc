"""lm-evaluation-harness model class, for users who can reach the hub's datasets:

    python -m export.evaluate.lm_eval_adapter --model deltallm \\
        --model_args config=smollm2_135m.yaml,overrides="attention.kind=delta attention.theta=0.6" \\
        --tasks piqa,hellaswag
    python -m export.evaluate.lm_eval_adapter --model deltallm --model_args pte=out/x/x.pte --tasks piqa

`--model_args`: config (export config for the eager model) with optional overrides (space-
separated dotted overrides), or pte (a program exported with export.full_logits=true).
Scoring is ours (lm-eval's tokenisation of context/continuation, whole-sequence prefill from
position 0, greedy generation); lm-eval supplies tasks, prompts and metrics. Needs
`pip install lm-eval` (in our dev extra).
"""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from .runner import encode_pair


def rolling_requests(lm, text: str) -> List[Tuple[List[int], List[int]]]:
    ids, window, reqs = lm.encode(text), lm.max_context_len, []
    for start in range(0, len(ids), window):
        piece = ids[start:start + window]
        prefix = [ids[start - 1]] if start else lm.with_bos([])
        fed, cont = prefix + piece[:-1], piece
        if not prefix:              # no BOS: the first token is not predicted
            fed, cont = piece[:-1], piece[1:]
        if cont:
            reqs.append((fed, cont))
    return reqs


@register_model("deltallm")
class DeltaLLMEval(LM):
    def __init__(self, config: Optional[str] = None, pte: Optional[str] = None, overrides: str = "", **_ignored):
        super().__init__()
        from ..config import load_config
        from ..errors import ConfigError
        from .lm import EagerLM, PteLM

        if bool(config) == bool(pte):
            raise ConfigError("--model_args", "give exactly one of config=... or pte=...")
        self.lm = PteLM(pte) if pte else EagerLM(load_config(config, str(overrides).split()))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        return self.lm.score_many([encode_pair(self.lm, *r.args[:2]) for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        """Sum of the log-probabilities of every token of each text, in disjoint windows of the
        context length: the first conditioned on BOS, each later one on the token before it
        (lm-eval's rolling windows with one token of context)."""
        out = []
        for r in requests:
            out.append(sum(ll for ll, _ in self.lm.score_many(rolling_requests(self.lm, r.args[0]))))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        out = []
        for r in requests:
            context, kwargs = r.args[0], dict(r.args[1] if len(r.args) > 1 else {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            ids = self.lm.with_bos(self.lm.encode(context))[-(self.lm.max_context_len - max_new):]
            new = self.lm.greedy(ids, max_new, stop=lambda t: any(u in self.lm.decode(t) for u in until))
            text = self.lm.decode(new)
            for u in until:
                text = text.split(u)[0]
            out.append(text)
        return out


def main(argv: Optional[List[str]] = None) -> int:
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval"] + list(sys.argv[1:] if argv is None else argv)
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
