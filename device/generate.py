"""`python -m device generate`: chat with a program on a phone or board without the app.

The host renders the program's chat template, tokenises with its tokenizer.json, pushes the
program, the ids and the native runner for the device's ABI (verified, unchanged files skipped),
runs `deltallm_runner generate` over the transport and detokenises the answer. The answer goes to
stdout; figures (TTFT, prefill/decode tok/s, sparsity, RSS) to stderr.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .bench import IDS_NAME, BenchPlan, DeviceFiles, ProgressBar, check_storage, program_sha256, resolve_runner
from .chat import chat_messages, render_chat
from .errors import DeviceError
from .info import device_abi
from .prompts import PromptError, load_tokenizer, write_ids
from .push import push_verified
from .transport import Transport


def prompt_ids(manifest: dict, tokenizer, prompt: str, system=None, raw: bool = False):
    text = None if raw else render_chat(manifest, chat_messages(prompt, system))
    ids = tokenizer.encode(text if text is not None else prompt, add_special_tokens=False).ids
    bos = (manifest.get("architecture") or {}).get("bos_id")
    if text is None and isinstance(bos, int) and bos >= 0:
        ids = [bos] + ids
    return ids


@dataclass
class Prepared:
    """What `generate` makes on the host before it connects: the checked program, its tokenizer,
    the prompt ids and the number of tokens to generate (capped to the program's context)."""

    prog: object
    tokenizer: object
    ids: list
    max_new_tokens: int


def prepare(ns) -> Prepared:
    from . import preflight

    prog = preflight.program(ns.pte, need_tokenizer=True)
    preflight.generate_options(ns)
    if ns.runner_binary:
        preflight.local_file("--runner-binary", ns.runner_binary)
    try:
        tok = load_tokenizer(prog.tokenizer)
    except PromptError as e:
        raise preflight.InputError("--pte", str(e)) from None
    if getattr(ns, "prompt", None) is None:   # chat: the conversation makes the ids, turn by turn
        if not prog.manifest.get("chat_template"):
            raise preflight.InputError("--pte", f"{prog.pte.name} carries no chat template (its manifest has no "
                                                "chat_template): use `python -m device generate --raw`")
        return Prepared(prog, tok, [], ns.max_new_tokens)
    ids = prompt_ids(prog.manifest, tok, ns.prompt, ns.system, ns.raw)
    n = ns.max_new_tokens
    ctx = prog.context
    if ctx is not None:
        if len(ids) >= ctx:
            raise preflight.InputError("--prompt", f"{len(ids)} tokens fill the program's max context {ctx}")
        if len(ids) + n > ctx:
            n = ctx - len(ids)
            print(f"note: --max-new-tokens {ns.max_new_tokens} capped to {n}: the prompt's {len(ids)} tokens "
                  f"leave {n} of the program's max context {ctx}", file=sys.stderr)
    return Prepared(prog, tok, ids, n)


def cmd_generate(ns, prep: Prepared, connect: Callable[[], Transport]) -> int:
    t = connect()
    try:
        return _generate(ns, prep, t)
    finally:
        t.close()


def _install(ns, prep: Prepared, t: Transport, ids=None):
    """Pushes the program, the prompt ids (when given) and the runner for the device's ABI."""
    pte = prep.prog.pte
    plan = BenchPlan(pte=pte, workdir=ns.workdir, runner="native",
                     runner_binary=Path(ns.runner_binary) if ns.runner_binary else None)
    abi = device_abi(t)
    _, binary, binary_sha = resolve_runner(t, plan, abi)
    files = DeviceFiles(ns.workdir, program_sha256(pte, prep.prog.manifest), binary_sha)
    with tempfile.TemporaryDirectory() as tmp:
        pushes = [(pte, files.path(pte.name)), (binary, files.runner)]
        if ids is not None:
            pushes.insert(1, (write_ids(ids, Path(tmp) / IDS_NAME), files.path(IDS_NAME)))
        check_storage(t, plan, pushes)
        for f, remote in pushes:
            pushed = push_verified(t, f, remote, progress=ProgressBar(f.name),
                                   sha256=files.program_sha256 if f == pte else None)
            print(f"{f.name}: {'pushed' if pushed else 'unchanged on device'}", file=sys.stderr)
    t.check(["chmod", "755", files.runner], "chmod runner")
    return files


def _generate(ns, prep: Prepared, t: Transport) -> int:
    pte, manifest, tok, ids = prep.prog.pte, prep.prog.manifest, prep.tokenizer, prep.ids
    files = _install(ns, prep, t, ids)
    cmd = [files.runner, "generate", "--pte", files.path(pte.name),
           "--prompt-ids", files.path(IDS_NAME), "--max-new-tokens", str(prep.max_new_tokens),
           "--temperature", str(ns.temperature), "--seed", str(ns.seed), "--threads", str(ns.threads)]
    if ns.cpus:
        cmd += ["--cpus", ns.cpus]
    r = t.shell(files.launch(cmd), ns.timeout_s)
    files.finished(t)
    if r.exit_code != 0:
        tail = " | ".join(r.output.strip().splitlines()[-3:])
        raise DeviceError(t.name, "generate", f"native runner exited with {r.exit_code}: {tail}")
    try:
        result = json.loads(r.output.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise DeviceError(t.name, "generate", f"the runner printed no result: {r.output[-200:]!r}") from e
    eos = set((manifest.get("architecture") or {}).get("eos_ids") or [])
    answer_ids = [x for x in result["tokens"] if x not in eos]
    result["text"] = tok.decode(answer_ids, skip_special_tokens=True)
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["text"])
    sp = result.get("sparsity") or {}
    pre = (sp.get("prefill") or {}).get("total") or {}
    print(f"[{result['prompt_tokens']} prompt tokens, {len(result['tokens'])} generated | TTFT "
          f"{result['ttft_ms']:.0f} ms | prefill {result['prefill_tps']:.1f} tok/s | decode "
          f"{result['decode_tps']:.1f} tok/s | RSS {result['peak_rss_mb']:.0f} MB"
          + (f" | S_c prefill {pre['s_c']:.1%}" if pre.get("macs_dense") else "") + "]", file=sys.stderr)
    return 0


def cmd_chat(ns, prep: Prepared, connect: Callable[[], Transport]) -> int:
    """`python -m device chat`: the persistent runner on the device, the conversation on the host."""
    from .chat_session import ChatClient, Conversation, run_chat

    t = connect()
    try:
        files = _install(ns, prep, t)
        cmd = [files.runner, "chat", "--pte", files.path(prep.prog.pte.name), "--threads", str(ns.threads)]
        if ns.cpus:
            cmd += ["--cpus", ns.cpus]
        stream = t.open_shell(files.launch_foreground(cmd), ns.timeout_s)
        client = ChatClient(stream, t.name, ns.timeout_s)
        try:
            r = client.ready
            print(f"[{prep.prog.pte.name} on {r['abi']} ({r['kernel_arch']}), {r['threads']} threads, context "
                  f"{r['max_context_len']}, loaded in {r['load_ms']:.0f} ms; Ctrl-C stops an answer, /reset starts "
                  f"a new chat, /quit ends]", file=sys.stderr)
            conv = Conversation(prep.prog.manifest, prep.tokenizer, ns.system)
            eos = set((prep.prog.manifest.get("architecture") or {}).get("eos_ids") or r.get("eos_ids") or [])
            tty = sys.stdin.isatty()
            if tty:
                print("> ", end="", file=sys.stderr, flush=True)
            return run_chat(client, conv, eos, iter(sys.stdin.readline, ""), max_new_tokens=ns.max_new_tokens,
                            temperature=ns.temperature, seed=ns.seed, as_json=ns.json, prompt=tty)
        finally:
            client.close()
            files.finished(t)
    finally:
        t.close()
