"""Benchmark prompts as token ids, made on the host with the program's own tokenizer.

Delta attention's sparsity (and so its speed) depends on real text, so benchmarks run on real
text: the English passage shipped with the package (device/data/passage_en.txt), or the user's
--prompt-file; random ids only when asked (--random-prompt). A text shorter than the longest
prompt is repeated (separated by a blank line); a --prompt-file only with --repeat-prompt, since
repeated text gives a sparsity real text would not. The ids go to the device as little-endian int32.
"""
from __future__ import annotations

import os
import random
import struct
import tempfile
from pathlib import Path
from typing import List, Optional

DEFAULT_PASSAGE = Path(__file__).resolve().parent / "data" / "passage_en.txt"


class PromptError(ValueError):
    """The prompt cannot be made; the message names the file or setting."""


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if not path.is_file():
        raise PromptError(f"{path}: no tokenizer.json beside the program (`python -m export` writes one with it)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
        raise PromptError(f"{path}: not a tokenizer.json ({e})") from e


def text_ids(tokenizer, text: str, n: int, bos_id: Optional[int] = None, repeat: bool = True) -> List[int]:
    """The first n ids of `text` after an optional BOS; a text that gives fewer is repeated
    (`repeat`) or refused."""
    if not text.strip():
        raise PromptError("the prompt text is empty")
    ids: List[int] = [bos_id] if bos_id is not None and bos_id >= 0 else []
    piece = tokenizer.encode(text.strip(), add_special_tokens=False).ids
    sep = tokenizer.encode("\n\n", add_special_tokens=False).ids
    if not repeat and len(ids) + len(piece) < n:
        raise PromptError(f"gives {len(ids) + len(piece)} tokens, fewer than the {n} asked; pass a longer text, or "
                          "--repeat-prompt to repeat it (sparsity on repeated text is not real)")
    while len(ids) < n:
        ids += piece + sep
    return ids[:n]


def random_ids(n: int, vocab: int, seed: int = 0) -> List[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, max(4, vocab)) for _ in range(n)]


def write_ids(ids: List[int], path: Path) -> Path:
    """Little-endian int32 ids, written atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack(f"<{len(ids)}i", *ids))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_ids(path: Path) -> List[int]:
    data = path.read_bytes()
    if not data or len(data) % 4:
        raise PromptError(f"{path}: expected little-endian int32 ids")
    return list(struct.unpack(f"<{len(data) // 4}i", data))


def bench_prompt_ids(pte: Path, manifest: dict, n: int, prompt_file: Optional[Path] = None,
                     random_prompt: bool = False, tokenizer_path: Optional[Path] = None,
                     repeat: bool = True) -> List[int]:
    """n ids for a benchmark of the program `pte`: real text unless random_prompt. A prompt file
    that gives fewer than n ids is repeated only with `repeat`."""
    arch = manifest.get("architecture") or {}
    vocab = int(arch.get("vocab_size") or 0)
    if random_prompt:
        if not vocab:
            raise PromptError(f"{pte.with_suffix('.json')}: the manifest has no architecture.vocab_size "
                              "for random prompt ids")
        return random_ids(n, vocab)
    if prompt_file is not None:
        try:
            text = Path(prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PromptError(f"{prompt_file}: {e}") from e
    else:
        text = DEFAULT_PASSAGE.read_text(encoding="utf-8")
    tok = load_tokenizer(tokenizer_path or pte.parent / "tokenizer.json")
    bos = arch.get("bos_id")
    try:
        return text_ids(tok, text, n, bos if isinstance(bos, int) else None, repeat or prompt_file is None)
    except PromptError as e:
        raise PromptError(f"{prompt_file}: {e}" if prompt_file is not None else str(e)) from None
