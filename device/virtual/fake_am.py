"""The virtual device's `am`: emulates the Android app's benchmark mode (android_protocol.py).

`am start ... -a <ACTION> --es k v --ei k n` starts, in the background, the app's own benchmark code
when $DLM_ANDROID_APP names it (a command such as `java -cp CLASSES -Ddeltallm.jni=LIB
org.deltallm.demo.BenchMain`, given FILES_DIR and key=value extras: the app's classes and native
library on a JVM), else the Python runner with the extras; either writes <files>/bench/<run_id>.json
and then the .done marker, as the app does."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..android_protocol import ACTION, PACKAGE


def main(argv) -> int:
    if not argv or argv[0] != "start":
        print("am: only 'am start' is emulated", file=sys.stderr)
        return 1
    extras, action, i = {}, None, 1
    while i < len(argv):
        a = argv[i]
        if a in ("--es", "--ei") and i + 2 < len(argv) + 1:
            extras[argv[i + 1]] = argv[i + 2]
            i += 3
        elif a in ("-a", "-n"):
            if a == "-a":
                action = argv[i + 1]
            i += 2
        else:
            i += 1
    if action != ACTION:
        print(f"Error: Activity not started, unknown action {action}", file=sys.stderr)
        return 1
    files = Path(os.environ["EXTERNAL_STORAGE"]) / "Android" / "data" / PACKAGE / "files" / "bench"
    files.mkdir(parents=True, exist_ok=True)
    run_id = extras["run_id"]
    out, done = files / f"{run_id}.json", files / f"{run_id}.done"
    app = os.environ.get("DLM_ANDROID_APP")
    if app:
        cmd = shlex.split(app) + [str(files.parent)] + [f"{k}={v}" for k, v in extras.items()]
        subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        print(f"Starting: Intent {{ act={action} cmp={PACKAGE}/.BenchmarkActivity }}\nStatus: ok")
        return 0
    cmd = [sys.executable, "-m", "device.runner", "--pte", extras["pte"], "--out", str(out),
           "--prompt-lengths", *extras["prompt_lengths"].split(","),
           "--decode-lengths", *extras["decode_lengths"].split(","),
           "--warmup", extras.get("warmup", "1"), "--reps", extras.get("reps", "3"),
           "--threads", extras.get("threads", "0")] + (["--prompt-ids", extras["prompt_ids"]]
                                                        if extras.get("prompt_ids") else [])
    script = (f"{' '.join(map(shlex.quote, cmd))} > /dev/null 2>&1 || echo \"error: runner exited with $?\" > {shlex.quote(str(done))}")
    subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Starting: Intent {{ act={action} cmp={PACKAGE}/.BenchmarkActivity }}\nStatus: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
