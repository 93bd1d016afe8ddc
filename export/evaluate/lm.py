"""The two models an evaluation scores: the eager model built exactly as the export config
says (attention and quantization), and a written .pte run by the ExecuTorch runtime.

Both score a whole sequence as one prefill from position 0 (in chunks of max_seq_len when
longer), as the deployed program sees a prompt, and generate greedily one token per call.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..config import AttentionKind, ExportConfig, config_from_dict
from ..errors import ConfigError, ExportError


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True):
    """ExecuTorch's llama custom ops log 'No temp allocator provided' on every eager call;
    keep them off the progress stream (file descriptor 2) while a model runs."""
    if not enabled:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LanguageModel:
    """Shared scoring logic; subclasses provide `_prefill_rows` and `_step_logits`."""

    label = "model"

    def __init__(self, tokenizer, bos_id: Optional[int], eos_ids: List[int], max_seq_len: int,
                 max_context_len: int, cfg: ExportConfig):
        self.tokenizer, self.bos_id, self.eos_ids = tokenizer, bos_id, list(eos_ids)
        self.max_seq_len, self.max_context_len, self.cfg = max_seq_len, max_context_len, cfg
        self.tokens_processed = 0
        self.theta_per_layer: Optional[List[float]] = cfg.attention.theta_per_layer   # effective θ
        self.key_alpha: Optional[float] = None      # key scales' α when a calibration set them

    @property
    def is_delta(self) -> bool:
        return self.cfg.attention.kind == AttentionKind.DELTA

    def _use_calibration(self, summary: Optional[dict]) -> None:
        """Take the effective per-layer θ and key scaling from a calibration summary (manifest form)."""
        if summary:
            self.theta_per_layer = summary.get("theta_per_layer") or self.theta_per_layer
            self.key_alpha = summary.get("alpha") if summary.get("key_scales") else None

    def encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def with_bos(self, ids: List[int]) -> List[int]:
        return ([self.bos_id] if self.bos_id is not None else []) + list(ids)

    def logprobs_last(self, ids: List[int], n: int) -> torch.Tensor:
        """log-softmax of the next-token logits at the last n positions of `ids` ([n, V])."""
        if not 1 <= n <= len(ids) <= self.max_context_len:
            raise ExportError(f"cannot score {n} of {len(ids)} tokens with a context of {self.max_context_len}")
        with torch.no_grad():
            rows = self._prefill_rows(ids, n)
        self.tokens_processed += len(ids)
        return torch.log_softmax(rows.float(), dim=-1)

    def score_many(self, requests: Sequence[Tuple[List[int], List[int]]],
                   on_done: Callable[[int], None] = lambda n: None) -> List[Tuple[float, bool]]:
        """(sum of log p(cont | fed), cont is the greedy continuation) per (fed, cont) request,
        where the last len(cont) positions of `fed` predict `cont`. Requests that feed the same
        tokens (e.g. BoolQ's one-token " yes" / " no") are run once."""
        groups: Dict[Tuple[Tuple[int, ...], int], List[int]] = {}
        for i, (fed, cont) in enumerate(requests):
            groups.setdefault((tuple(fed), len(cont)), []).append(i)
        unique = [(list(fed), n) for fed, n in groups]
        out: List[Tuple[float, bool]] = [None] * len(requests)

        def done(k: int, rows: torch.Tensor) -> None:
            for i in groups[(tuple(unique[k][0]), unique[k][1])]:
                out[i] = _score(rows, requests[i][1])
            on_done(len(groups[(tuple(unique[k][0]), unique[k][1])]))

        self._rows_many(unique, done)
        return out

    def _rows_many(self, unique: List[Tuple[List[int], int]], done: Callable[[int, torch.Tensor], None]) -> None:
        for k, (fed, n) in enumerate(unique):
            done(k, self.logprobs_last(fed, n))

    def greedy(self, ids: List[int], max_new: int, stop: Callable[[List[int]], bool]) -> List[int]:
        """Greedy continuation of `ids`: at most max_new tokens, until EOS or stop(new_ids)."""
        out: List[int] = []
        with torch.no_grad():
            logits = self._prefill_rows(ids, 1)[-1]
            pos = len(ids)
            while True:
                nxt = int(logits.argmax())
                if nxt in self.eos_ids:
                    break
                out.append(nxt)
                if len(out) >= max_new or stop(out) or pos + 1 > self.max_context_len:
                    break
                logits = self._step_logits(nxt, pos)
                pos += 1
        self.tokens_processed += len(ids) + len(out)
        return out

    def _chunks(self, ids: List[int]):
        t = torch.tensor([ids], dtype=torch.long)
        for start in range(0, len(ids), self.max_seq_len):
            yield t[:, start: start + self.max_seq_len], start

    def _prefill_rows(self, ids: List[int], n: int) -> torch.Tensor:
        raise NotImplementedError

    def _step_logits(self, token: int, pos: int) -> torch.Tensor:
        raise NotImplementedError

    def greedy_many(self, prompts: List[List[int]], max_new: int, stop: Callable[[List[int]], bool],
                    on_done: Callable[[int], None] = lambda n: None) -> List[List[int]]:
        out = []
        for p in prompts:
            out.append(self.greedy(p, max_new, stop))
            on_done(1)
        return out


def _score(rows: torch.Tensor, cont: List[int]) -> Tuple[float, bool]:
    idx = torch.tensor(cont).unsqueeze(1)
    ll = float(rows.gather(1, idx).sum())
    return ll, bool((rows.argmax(dim=1) == idx[:, 0]).all())


class EagerLM(LanguageModel):
    """Our export-ready module with the config's attention and torchao quantization."""

    label = "eager"

    def __init__(self, cfg: ExportConfig, source=None, calibration=None):
        from ..pipeline import build_model
        from ..quantize import quantize_model
        from ..sources import load_source

        source = source or load_source(cfg)
        built = build_model(cfg, source, calibration)
        self.model = built.model
        quantize_model(self.model, cfg.quantization)
        self.source = source
        a = source.args
        super().__init__(source.tokenizer, a.bos_id, a.eos_ids, cfg.export.max_seq_len,
                         cfg.export.max_context_len, cfg)
        self._use_calibration(built.calibration and built.calibration.summary(cfg.attention.calibration))
        self._quiet = cfg.attention.kind == AttentionKind.DENSE

    PACK_TOKENS = 768   # tokens per packed pass (weights read once per pack)

    def _rows_many(self, unique, done):
        from .packing import packed_hidden

        short = [k for k, (fed, _) in enumerate(unique) if len(fed) <= self.max_seq_len]
        for k in sorted(set(range(len(unique))) - set(short)):   # chunked prefill, as the runtime
            done(k, self.logprobs_last(*unique[k]))
        pack: List[int] = []
        packed_tokens = 0
        for pos, k in enumerate(short):
            pack.append(k)
            packed_tokens += len(unique[k][0])
            nxt = len(unique[short[pos + 1]][0]) if pos + 1 < len(short) else None
            if nxt is not None and packed_tokens + nxt <= self.PACK_TOKENS:
                continue
            seqs = [unique[j][0] for j in pack]
            with torch.no_grad(), native_stderr_silenced(self._quiet):
                h = packed_hidden(self.model, seqs)
                ends = torch.tensor([len(x) for x in seqs]).cumsum(0).tolist()
                rows = torch.cat([h[e - unique[j][1]: e] for e, j in zip(ends, pack)])
                logp = torch.log_softmax(self.model.lm_head(rows).float(), dim=-1)
            self.tokens_processed += packed_tokens
            at = 0
            for j in pack:
                done(j, logp[at: at + unique[j][1]])
                at += unique[j][1]
            pack, packed_tokens = [], 0

    GEN_SLOTS = 8   # sequences generated together (each with its own copy of the caches)

    def greedy_many(self, prompts, max_new, stop, on_done=lambda n: None):
        """Greedy generation, GEN_SLOTS prompts at a time through packed passes; prompts longer
        than max_seq_len go one by one (chunked prefill, as the runtime)."""
        from .packing import packed_greedy, slot_cores

        out: List[List[int]] = [None] * len(prompts)
        short = [i for i, p in enumerate(prompts) if len(p) <= self.max_seq_len]
        for i in sorted(set(range(len(prompts))) - set(short)):
            out[i] = self.greedy(prompts[i], max_new, stop)
            on_done(1)
        cores = slot_cores(self.model, min(self.GEN_SLOTS, max(len(short), 1)))
        for at in range(0, len(short), self.GEN_SLOTS):
            group = short[at: at + self.GEN_SLOTS]
            with torch.no_grad(), native_stderr_silenced(self._quiet):
                gens = packed_greedy(self.model, [prompts[i] for i in group], max_new, self.eos_ids, stop, cores)
            for i, g in zip(group, gens):
                out[i] = g
                self.tokens_processed += len(prompts[i]) + len(g)
            on_done(len(group))
        return out

    def _prefill_rows(self, ids: List[int], n: int) -> torch.Tensor:
        hidden = []
        with native_stderr_silenced(self._quiet):
            for chunk, start in self._chunks(ids):
                hidden.append(self.model.hidden(chunk, torch.tensor([start]))[0])
        rows = torch.cat(hidden)[-n:] if len(hidden) > 1 else hidden[0][-n:]
        return self.model.lm_head(rows)

    def _step_logits(self, token: int, pos: int) -> torch.Tensor:
        with native_stderr_silenced(self._quiet):
            h = self.model.hidden(torch.tensor([[token]]), torch.tensor([pos]))
        return self.model.lm_head(h[0, -1])


class PteLM(LanguageModel):
    """A written program (exported with export.full_logits=true) in the ExecuTorch runtime; its
    manifest and tokenizer.json are read from beside it."""

    label = "pte"

    def __init__(self, pte: Path):
        from tokenizers import Tokenizer

        from ..runtime import PteModel

        pte = Path(pte)
        manifest_path, tok_path = pte.with_suffix(".json"), pte.parent / "tokenizer.json"
        for p, what in ((pte, "program"), (manifest_path, "manifest"), (tok_path, "tokenizer")):
            if not p.is_file():
                raise ConfigError("--pte", f"{what} {str(p)!r} does not exist")
        try:
            self.manifest = json.loads(manifest_path.read_text())
            cfg = config_from_dict(self.manifest["config"])
            arch = self.manifest["architecture"]
        except (ValueError, KeyError) as e:
            raise ConfigError("--pte", f"{str(manifest_path)!r} is not an export manifest: {e}") from e
        if not cfg.export.full_logits:
            raise ConfigError("--pte", f"{pte.name} returns the last position's logits only; scoring needs "
                                       "every position: export it with export.full_logits=true")
        self.program = PteModel(pte)
        self.path = pte
        super().__init__(Tokenizer.from_file(str(tok_path)), arch.get("bos_id"), arch.get("eos_ids") or [],
                         cfg.export.max_seq_len, cfg.export.max_context_len, cfg)
        self._use_calibration(self.manifest.get("calibration"))

    def _prefill_rows(self, ids: List[int], n: int) -> torch.Tensor:
        rows = [self.program.forward(chunk, start)[0] for chunk, start in self._chunks(ids)]
        return torch.cat(rows)[-n:] if len(rows) > 1 else rows[0][-n:]

    def _step_logits(self, token: int, pos: int) -> torch.Tensor:
        return self.program.forward(torch.tensor([[token]]), pos)[0, -1]
