"""The Android app's benchmark mode: the one place that defines the protocol between
`python -m device bench --runner android` and the app (android_demo/ follows it).

Launch:   am start -W -n <PACKAGE>/<ACTIVITY> -a <ACTION> --es run_id ID --es pte PATH --es tokenizer PATH
              --es prompt_lengths "32,128" --es decode_lengths "16" --ei warmup 1 --ei reps 3 --ei threads 0
              [--es prompt_ids PATH]   (little-endian int32 ids made on the host from real text)
Result:   <files>/bench/<run_id>.json with the runner's schema (RESULT_SCHEMA, protocol RESULT_PROTOCOL),
          written to a temp name and renamed; then <files>/bench/<run_id>.done (completion marker,
          content "ok" or "error: <message>").
<files>:  the app's external files directory, /sdcard/Android/data/<PACKAGE>/files.
The module polls for the marker (timeout), then pulls the JSON.
"""
from __future__ import annotations

import posixpath
from typing import Dict, List, Optional

from .runner import PROTOCOL as RESULT_PROTOCOL

PACKAGE = "org.deltallm.demo"
ACTIVITY = ".BenchmarkActivity"
ACTION = "org.deltallm.demo.action.BENCHMARK"
FILES_DIR = f"/sdcard/Android/data/{PACKAGE}/files"

RESULT_SCHEMA = {
    "protocol": RESULT_PROTOCOL, "runner": "android", "abi": "str", "load_ms": "float", "startup_ms": "float",
    "peak_rss_mb": "float", "threads": "int",
    "configs": [{"prompt_tokens": "int", "decode_tokens": "int",
                 "samples": {"ttft_ms": ["float"], "prefill_tps": ["float"], "decode_tps": ["float"]},
                 "sparsity": "null or {prefill: {total, layers}, decode: {total, layers}, all}"}],
}


def result_path(run_id: str) -> str:
    return posixpath.join(FILES_DIR, "bench", f"{run_id}.json")


def done_path(run_id: str) -> str:
    return result_path(run_id)[: -len(".json")] + ".done"


def launch_command(run_id: str, pte: str, tokenizer: str, prompt_lengths: List[int], decode_lengths: List[int],
                   warmup: int, reps: int, threads: int, prompt_ids: Optional[str] = None) -> List[str]:
    extras: Dict[str, str] = {"run_id": run_id, "pte": pte, "tokenizer": tokenizer,
                              "prompt_lengths": ",".join(map(str, prompt_lengths)),
                              "decode_lengths": ",".join(map(str, decode_lengths))}
    if prompt_ids:
        extras["prompt_ids"] = prompt_ids
    cmd = ["am", "start", "-W", "-n", f"{PACKAGE}/{ACTIVITY}", "-a", ACTION]
    for k, v in extras.items():
        cmd += ["--es", k, v]
    for k, v in {"warmup": warmup, "reps": reps, "threads": threads}.items():
        cmd += ["--ei", k, str(v)]
    return cmd
