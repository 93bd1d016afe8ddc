"""Every check a device command can make on the host, made before it connects or pushes anything.

`bench`, `generate` and `push` call these first: the program is an ExecuTorch program and the
manifest beside it describes it (size, and sha256 where the manifest records one), the tokenizer is
there and fits the program's vocabulary, every number is in range for the program's context, the
results folder can be written and does not hold an earlier run, the device address parses. A
failure is an `InputError`: one line naming the option or file, exit code 2, nothing pushed or
written. Failures found on the device stay `DeviceError` (3), timeouts 4.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from export.atomic import probe_write
from export.external import sha256_file

ET_IDENTIFIER_AT = 4        # a .pte is a flatbuffer: its 4-byte file identifier ("ET" + 2 digits) follows the root offset
CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


class InputError(Exception):
    """Bad input found on the host, before any transfer (exit code 2)."""

    exit_code = 2

    def __init__(self, what: str, message: str):
        self.what = what
        super().__init__(f"{what}: {message}")


def device_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError("--device", f"{address!r} is not HOST:PORT (e.g. 127.0.0.1:5555 for adb tcpip, "
                                     "or the address `python -m device virtual` prints)")
    return address


@dataclass
class Program:
    pte: Path
    manifest: dict                  # {} when the program has no manifest beside it
    tokenizer: Optional[Path]       # None when absent

    @property
    def context(self) -> Optional[int]:
        ctx = ((self.manifest.get("config") or {}).get("export") or {}).get("max_context_len")
        return ctx if isinstance(ctx, int) and ctx > 0 else None


def program(pte_arg: str, need_tokenizer: bool) -> Program:
    """The program, its manifest (checked against it) and its tokenizer (checked against both)."""
    pte = Path(pte_arg)
    if not pte.is_file():
        raise InputError("--pte", f"{pte} does not exist" if not pte.exists() else f"{pte} is not a file")
    size = pte.stat().st_size
    with open(pte, "rb") as f:
        head = f.read(ET_IDENTIFIER_AT + 4)
    ident = head[ET_IDENTIFIER_AT:]
    if len(head) < ET_IDENTIFIER_AT + 4 or ident[:2] != b"ET" or not ident[2:].isdigit():
        raise InputError("--pte", f"{pte} is not an ExecuTorch program (no 'ET' flatbuffer identifier at byte 4)")
    manifest: dict = {}
    mpath = pte.with_suffix(".json")
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InputError(str(mpath), f"not a readable JSON manifest ({e})") from None
        if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("deltallm-export/"):
            raise InputError(str(mpath), "not a manifest written by `python -m export` (no format deltallm-export/N)")
        nbytes, sha = manifest.get("pte_bytes"), manifest.get("pte_sha256")
        if (nbytes is not None and nbytes != size) or (sha is not None and sha != sha256_file(pte)):
            raise InputError("--pte", f"{pte} ({size} bytes) is not the program its manifest {mpath.name} describes "
                                      f"({nbytes} bytes{', sha256 ' + sha[:12] if sha else ''}): re-export, or keep "
                                      "each program with its own manifest")
    tok = pte.parent / str(manifest.get("tokenizer") or "tokenizer.json")
    if not tok.is_file():
        if need_tokenizer:
            raise InputError("--pte", f"no {tok.name} beside {pte} (`python -m export` writes it with the program)")
        return Program(pte, manifest, None)
    vocab = (manifest.get("architecture") or {}).get("vocab_size")
    if isinstance(vocab, int):
        try:
            from tokenizers import Tokenizer

            n = Tokenizer.from_file(str(tok)).get_vocab_size(with_added_tokens=True)
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
            raise InputError(str(tok), f"not a tokenizer.json ({e})") from None
        if n > vocab:
            raise InputError(str(tok), f"{n} tokens, more than the program's vocabulary of {vocab} "
                                       f"(manifest architecture.vocab_size): not this program's tokenizer")
    return Program(pte, manifest, tok)


def _ints(flag: str, values: Sequence[int], lo: int, hi: Optional[int] = None, why: str = "") -> None:
    for v in values:
        if v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise InputError(flag, f"{v} is out of range ({rng}{why})")


def cpus(flag: str, value: Optional[str]) -> None:
    if value is not None and not CPU_LIST.match(value):
        raise InputError(flag, f"{value!r} is not a CPU list such as 4-7 or 0,2,4-5")


def bench_options(ns, prog: Program) -> None:
    ctx = prog.context
    why = f"; the program's max context is {ctx}" if ctx else ""
    _ints("--prompt-lengths", ns.prompt_lengths, 1, ctx, why)
    _ints("--decode-lengths", ns.decode_lengths, 0)
    if ctx:
        for p in ns.prompt_lengths:
            for d in ns.decode_lengths:
                if p + d > ctx:
                    raise InputError("--decode-lengths", f"prompt {p} + decode {d} tokens exceed the program's "
                                                         f"max context {ctx}")
    _ints("--reps", [ns.reps], 1)
    _ints("--warmup", [ns.warmup], 0)
    _ints("--threads", [ns.threads], 0, why="; 0 uses every core")
    cpus("--cpus", ns.cpus)
    if ns.cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", ns.cpu_mask):
        raise InputError("--cpu-mask", f"{ns.cpu_mask!r} is not a hexadecimal CPU mask such as f0")
    if not ns.run_timeout_s > 0:
        raise InputError("--run-timeout-s", f"{ns.run_timeout_s:g} must be > 0")
    if not ns.cooldown_s >= 0:
        raise InputError("--cooldown-s", f"{ns.cooldown_s:g} must be >= 0")
    if ns.prompt_file and ns.random_prompt:
        raise InputError("--prompt-file", "--prompt-file and --random-prompt exclude each other")


def generate_options(ns) -> None:
    _ints("--max-new-tokens", [ns.max_new_tokens], 1)
    _ints("--threads", [ns.threads], 0, why="; 0 uses every core")
    cpus("--cpus", ns.cpus)
    if not ns.temperature >= 0:
        raise InputError("--temperature", f"{ns.temperature:g} must be >= 0 (0: greedy)")
    if not ns.timeout_s > 0:
        raise InputError("--timeout-s", f"{ns.timeout_s:g} must be > 0")


def bench_prompt(ns, prog: Program) -> List[int]:
    """The benchmark's prompt ids, made on the host (a short --prompt-file is refused unless
    --repeat-prompt)."""
    from .prompts import PromptError, bench_prompt_ids

    try:
        return bench_prompt_ids(prog.pte, prog.manifest, max(ns.prompt_lengths),
                                Path(ns.prompt_file) if ns.prompt_file else None, ns.random_prompt, prog.tokenizer,
                                repeat=ns.repeat_prompt)
    except PromptError as e:
        raise InputError("--prompt-file" if ns.prompt_file else "--pte", str(e)) from None


def results_dir(value: Optional[str], overwrite: bool) -> Optional[Path]:
    """Created up front and proven writable; a folder holding results is kept unless --overwrite."""
    if value is None:
        return None
    d = Path(value)
    try:
        if d.is_dir() and any(d.iterdir()) and not overwrite:
            raise InputError("--results-dir", f"{d} is not empty (pass --overwrite to replace its results)")
        d.mkdir(parents=True, exist_ok=True)
        probe_write(d)
    except OSError as e:
        raise InputError("--results-dir", f"{d} cannot be written ({e.strerror or e})") from None
    return d


def local_file(flag: str, value: str) -> Path:
    p = Path(value)
    if not p.is_file():
        raise InputError(flag, f"{p} does not exist" if not p.exists() else f"{p} is not a file")
    if not os.access(p, os.R_OK):
        raise InputError(flag, f"{p} cannot be read")
    return p
