"""Time to first token of each turn of a scripted chat, with the cache reused across turns and
without (every turn prefilled from position 0), on the native runner's chat server, same run.

    python bench/chat_reuse.py --pte out/smollm2_135m/smollm2_135m.pte out/smollm2_135m_delta/smollm2_135m_delta.pte \
        [--threads 2] [--max-new-tokens 48] [--abi x86_64|arm64-v8a] [--format md|csv|json|jsonl]

Both sessions of a program answer the same scripted user messages, turn by turn alternately, each
with its own history. Per turn: prompt tokens, tokens reused / prefilled, TTFT of both and their
ratio (on arm64-v8a the runner runs under qemu-aarch64-static: its counts and answers are
meaningful, its times are not), whether the answers are token-identical to the fresh session's, and whether a new session
fed the same requests (a replay) answers the same. Progress on stderr, results on stdout.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = "You are a helpful assistant. Answer in two or three sentences."
SCRIPT = [
    "What is the capital of France?",
    "What is it famous for?",
    "Name three museums there.",
    "Which of them is the oldest?",
    "How do I get there from the airport?",
    "Thanks! Summarise our conversation in one sentence.",
]


@dataclass
class Row:
    program: str
    abi: str
    attention: str
    turn: int
    prompt_tokens: int
    reused_tokens: int
    prefilled_tokens: int
    ttft_reuse_ms: float
    ttft_fresh_ms: float
    ratio: float
    same_answer: bool         # as the fresh session's (dense: rounding aside, the same computation)
    same_as_replay: bool      # as a new session fed the same requests (delta: calls shape the band)
    dropped_turns: int
    cpu: str
    threads: int


def cpu_name() -> str:
    """The model name with family/model (a VM may only say "AMD EPYC")."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" (family {info['cpu family']} model {info.get('model', '?')})"
    return name


def run_program(pte: Path, runner: List[str], threads: int, max_new: int, turns: int) -> List[Row]:
    from device.chat_session import ChatClient, Conversation
    from device.preflight import program
    from device.prompts import load_tokenizer
    from device.shell_stream import LocalShellStream

    prog = program(str(pte), need_tokenizer=True)
    tok = load_tokenizer(prog.tokenizer)
    eos = set((prog.manifest.get("architecture") or {}).get("eos_ids") or [])
    cmd = runner + ["chat", "--pte", str(pte), "--threads", str(threads)]
    reuse, fresh = ChatClient(LocalShellStream(cmd), "host"), ChatClient(LocalShellStream(cmd), "host")
    conv = {"reuse": Conversation(prog.manifest, tok, SYSTEM), "fresh": Conversation(prog.manifest, tok, SYSTEM)}
    kind = "delta" if reuse.ready["delta_attention"] else "dense"
    rows, requests, answers = [], [], []
    try:
        for k, user in enumerate(SCRIPT[:turns], 1):
            done = {}
            for name, client in (("reuse", reuse), ("fresh", fresh)):
                ids, keep, starts = conv[name].request(user)
                if name == "reuse":
                    requests.append((ids, keep, starts))
                d = client.generate(ids, keep, starts, max_new, reuse=name == "reuse")
                answer = [t for t in d["tokens"] if t not in eos]
                conv[name].answered(user, tok.decode(answer, skip_special_tokens=True), d["dropped_turns"])
                done[name] = d
            r, f = done["reuse"], done["fresh"]
            answers.append(r["tokens"])
            rows.append(Row(pte.stem, reuse.ready["abi"], kind, k, r["prompt_tokens"], r["reused_tokens"], r["prefilled_tokens"],
                            r["ttft_ms"], f["ttft_ms"], r["ttft_ms"] / f["ttft_ms"], r["tokens"] == f["tokens"],
                            False, r["dropped_turns"], cpu_name(), reuse.ready["threads"]))
            print(f"{pte.stem} turn {k}: {r['reused_tokens']}/{r['prompt_tokens']} reused, TTFT {r['ttft_ms']:.0f} "
                  f"vs {f['ttft_ms']:.0f} ms", file=sys.stderr)
    finally:
        reuse.close()
        fresh.close()
    replay = ChatClient(LocalShellStream(cmd), "host")
    try:
        for row, (ids, keep, starts), tokens in zip(rows, requests, answers):
            row.same_as_replay = replay.generate(ids, keep, starts, max_new)["tokens"] == tokens
    finally:
        replay.close()
    return rows


def render(rows: List[Row], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps(asdict(r)) for r in rows)
    names = [f.name for f in fields(Row)]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(names)
        for r in rows:
            w.writerow([getattr(r, n) for n in names])
        return buf.getvalue().rstrip("\n")
    head = ["program", "abi", "attention", "turn", "prompt", "reused", "prefilled", "TTFT reuse ms", "TTFT fresh ms",
            "ratio", "same answer", "same as replay", "dropped turns"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r.program} | {r.abi} | {r.attention} | {r.turn} | {r.prompt_tokens} | {r.reused_tokens} | "
                     f"{r.prefilled_tokens} | {r.ttft_reuse_ms:.1f} | {r.ttft_fresh_ms:.1f} | {r.ratio:.3f} | "
                     f"{'yes' if r.same_answer else 'no'} | {'yes' if r.same_as_replay else 'no'} | {r.dropped_turns} |")
    if rows:
        lines.append(f"\nCPU: {rows[0].cpu}, {rows[0].threads} threads")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pte", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--turns", type=int, default=len(SCRIPT), choices=range(1, len(SCRIPT) + 1))
    ap.add_argument("--abi", choices=["x86_64", "arm64-v8a"], default="x86_64",
                    help="arm64-v8a: the arm64 runner under qemu-aarch64-static (counts, not speed)")
    ap.add_argument("--runner", help="a deltallm_runner for --abi (default: the cached build of these sources)")
    ap.add_argument("--format", choices=["md", "csv", "json", "jsonl"], default="md")
    ns = ap.parse_args(argv)
    for p in ns.pte:
        if not Path(p).is_file():
            print(f"error: --pte {p}: no such file", file=sys.stderr)
            return 2
    if ns.runner:
        binary = ns.runner
    else:
        from device.native_build import build_runner

        binary = build_runner(ns.abi).binary
    if ns.abi == "arm64-v8a":
        os.environ.setdefault("QEMU_CPU", "max")
    runner = (["qemu-aarch64-static"] if ns.abi == "arm64-v8a" else []) + [str(binary)]
    rows = []
    for p in ns.pte:
        rows += run_program(Path(p), runner, ns.threads, ns.max_new_tokens, ns.turns)
    print(render(rows, ns.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
