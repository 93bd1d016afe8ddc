"""Run a written .pte in the ExecuTorch runtime (Python bindings).

Importing this module registers every kernel our programs may need: the portable
library, llama::custom_sdpa / update_cache, the quantized embedding kernels and,
when built, our delta-attention kernel library.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

_LOADED = False


def load_kernel_libraries() -> None:
    global _LOADED
    if _LOADED:
        return
    from executorch.extension.pybindings import portable_lib  # noqa: F401  (must come first)
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    try:
        import delegates.runtime_library as delta_lib
        delta_lib.load()
    except ImportError:
        pass
    _LOADED = True


class PteModel:
    """A loaded program whose `forward(tokens, input_pos)` keeps its KV cache across calls."""

    def __init__(self, path: Path):
        load_kernel_libraries()
        from executorch.runtime import Runtime

        t0 = time.perf_counter()
        self.runtime = Runtime.get()
        self.program = self.runtime.load_program(str(path))
        self.method = self.program.load_method("forward")
        self.load_s = time.perf_counter() - t0
        self._meta = {}

    def metadata(self, name: str):
        if name not in self._meta:
            out = self.program.load_method(name).execute([])
            vals = [o.item() if isinstance(o, torch.Tensor) else o for o in out]
            self._meta[name] = vals[0] if len(vals) == 1 else vals
        return self._meta[name]

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        return self.method.execute([tokens.to(torch.long), torch.tensor([start], dtype=torch.long)])[0]


def run_sequence(step, prompt_ids: Sequence[int], decode_steps: int, max_seq_len: int,
                 forced: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
    """Prefill `prompt_ids` in chunks of max_seq_len, then decode `decode_steps` tokens.

    `step(tokens[1,S], start) -> logits` is the eager model or a PteModel. Decode feeds the
    argmax, or the tokens in `forced` (to replay another run's choices). Returns the logits
    of the last position after the prefill and after every decode step ([V] each).
    """
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    pos, logits = 0, None
    while pos < ids.shape[1]:
        chunk = ids[:, pos: pos + max_seq_len]
        logits = step(chunk, pos)
        pos += chunk.shape[1]
    outs = [_last(logits)]
    for i in range(decode_steps):
        nxt = int(forced[i]) if forced is not None else int(outs[-1].argmax())
        outs.append(_last(step(torch.tensor([[nxt]]), pos)))
        pos += 1
    return outs


def _last(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.detach().float()
    return logits[0, -1] if logits.dim() == 3 else logits.reshape(-1, logits.shape[-1])[-1]
