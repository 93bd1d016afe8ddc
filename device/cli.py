"""`python -m device`: inspect devices, push, pull, run shell commands, benchmark, report, and
start a virtual device.

    python -m device info    --device HOST:PORT
    python -m device shell   --device HOST:PORT -- CMD ARG...
    python -m device push    --device HOST:PORT LOCAL REMOTE
    python -m device pull    --device HOST:PORT REMOTE LOCAL
    python -m device bench   --device HOST:PORT --pte out/m.pte [--prompt-lengths 32 128] [--decode-lengths 16]
                             [--runner auto|native|python|android] [--runner-binary PATH] [--cpus 4-7]
                             [--prompt-file TEXT | --random-prompt] [--reps 3] [--warmup 1] [--threads N]
                             [--cpu-mask f0] [--thermal-limit-c 45] [--cooldown-s 0]
                             [--format md|csv|json|jsonl] [--results-dir DIR]
    python -m device generate --device HOST:PORT --pte out/m.pte --prompt "..." [--max-new-tokens 64] [--raw]
    python -m device chat    --device HOST:PORT --pte out/m.pte [--system "..."] [--max-new-tokens 256] [--json]
    python -m device build-runner [--abi x86_64 arm64-v8a] [--et-src DIR|ARCHIVE] [--force]
    python -m device stage-source [--et-src DIR|ARCHIVE]       # the ExecuTorch tree builds use
    python -m device report  RESULTS.json [--format md|csv|json|jsonl]
    python -m device plot    RESULTS.json [--out-dir DIR]
    python -m device virtual --root DIR [--port-file F] [--lifetime-s 3600] [--refuse-keys] [--abi arm64-v8a|x86_64]

Progress on stderr, results on stdout. Exit codes: 0 ok, 2 bad arguments, 3 device error,
4 device timeout, 5 key refused.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .errors import DeviceError


def _transport(ns):
    from .transport import AdbTcpTransport

    return AdbTcpTransport(ns.device, key_path=Path(ns.key) if ns.key else None,
                           auth_timeout_s=ns.auth_timeout_s)


def _write_results(d: Path, rows) -> None:
    """Every format of `rows` into `d`, each file replaced atomically (called as each cell finishes)."""
    from export.atomic import write_atomic

    from .results import FORMATS

    for fmt, fn in FORMATS.items():
        text = fn(rows)
        write_atomic(d / f"results.{fmt}", lambda p, t=text: p.write_text(t))


def cmd_bench(ns) -> int:
    from . import preflight
    from .bench import BenchPlan, run_bench
    from .results import FORMATS

    preflight.device_address(ns.device)
    prog = preflight.program(ns.pte, need_tokenizer=not ns.random_prompt or ns.runner == "android")
    preflight.bench_options(ns, prog)
    if ns.runner_binary:
        preflight.local_file("--runner-binary", ns.runner_binary)
    ids = preflight.bench_prompt(ns, prog)
    fresh_dir = bool(ns.results_dir) and not Path(ns.results_dir).exists()
    out = preflight.results_dir(ns.results_dir, ns.overwrite)
    plan = BenchPlan(pte=prog.pte, workdir=ns.workdir, prompt_lengths=ns.prompt_lengths,
                     decode_lengths=ns.decode_lengths, warmup=ns.warmup, reps=ns.reps, threads=ns.threads,
                     cpu_mask=ns.cpu_mask, thermal_limit_c=ns.thermal_limit_c, cooldown_s=ns.cooldown_s,
                     run_timeout_s=ns.run_timeout_s, python=ns.python, runner=ns.runner,
                     runner_binary=Path(ns.runner_binary) if ns.runner_binary else None, cpus=ns.cpus,
                     prompt_file=Path(ns.prompt_file) if ns.prompt_file else None, random_prompt=ns.random_prompt,
                     prompt_ids=ids)
    rows = []

    def keep(row) -> None:
        rows.append(row)
        if out:
            _write_results(out, rows)

    t = _transport(ns)
    try:
        run_bench(t, plan, on_result=keep)
    except DeviceError:
        if fresh_dir and not rows:   # a folder made for this run, and the run wrote nothing
            out.rmdir()
        if rows:   # the finished cells are kept (and written as they finished); name what is missing
            done = {(r.prompt_tokens, r.decode_tokens) for r in rows}
            missing = [f"prompt {p} decode {d}" for p in plan.prompt_lengths for d in plan.decode_lengths
                       if (p, d) not in done]
            sys.stdout.write(FORMATS[ns.format](rows))
            print(f"kept {len(rows)} finished cell(s){' in ' + str(out) if out else ''}; missing: "
                  + ", ".join(missing), file=sys.stderr)
        raise
    finally:
        t.close()
    if out:
        print(f"results written to {out}", file=sys.stderr)
    sys.stdout.write(FORMATS[ns.format](rows))
    return 0


def _load_results(path: str):
    """BenchResult rows from a results.json; None (after one error line) if it is not one."""
    from .results import BenchResult

    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, list) or not data:
            raise ValueError("expected a non-empty list of result rows")
        return [BenchResult(**r) for r in data]
    except OSError as e:
        print(f"error: {path}: cannot read it ({e.strerror or e})", file=sys.stderr)
    except (ValueError, TypeError) as e:
        what = "a row lacks fields or has unknown ones" if isinstance(e, TypeError) else str(e).splitlines()[0]
        print(f"error: {path}: not a results.json of `python -m device bench` ({what})", file=sys.stderr)
    return None


def cmd_report(ns) -> int:
    from .results import FORMATS

    rows = _load_results(ns.results)
    if rows is None:
        return 2
    sys.stdout.write(FORMATS[ns.format](rows))
    return 0


def cmd_plot(ns) -> int:
    from .plot import plot_results

    rows = _load_results(ns.results)
    if rows is None:
        return 2
    for path in plot_results(rows, Path(ns.out_dir)):
        print(path)
    return 0


def cmd_virtual(ns) -> int:
    from export.atomic import probe_write

    from . import preflight
    from .virtual import Faults, VirtualDevice

    root = Path(ns.root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe_write(root)
    except OSError as e:
        raise preflight.InputError("--root", f"{root} cannot be used as the device's file system "
                                             f"({e.strerror or e})") from None
    dev = VirtualDevice(Path(ns.root), faults=Faults(refuse_keys=ns.refuse_keys), max_lifetime_s=ns.lifetime_s,
                        abi=ns.abi).start()
    if ns.port_file:
        from export.atomic import write_atomic

        write_atomic(Path(ns.port_file), lambda p: p.write_text(str(dev.port)))
    print(dev.address, flush=True)
    try:
        dev.stopped.wait(ns.lifetime_s + 1)
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m device", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_device(sp):
        sp.add_argument("--device", required=True, help="HOST:PORT (adb tcpip mode, or a virtual device)")
        sp.add_argument("--key", help="ADB private key (default ~/.android/adbkey, created if missing)")
        sp.add_argument("--auth-timeout-s", type=float, default=10.0)
        return sp

    with_device(sub.add_parser("info", help="device information as JSON"))
    sp = with_device(sub.add_parser("shell", help="run a command (arguments are quoted)"))
    sp.add_argument("argv", nargs="+")
    sp.add_argument("--timeout-s", type=float, default=60.0)
    sp = with_device(sub.add_parser("push", help="push a file, verified by checksum"))
    sp.add_argument("local")
    sp.add_argument("remote")
    sp = with_device(sub.add_parser("pull", help="pull a file (no partial file on failure)"))
    sp.add_argument("remote")
    sp.add_argument("local")
    sp = with_device(sub.add_parser("bench", help="benchmark a .pte on the device"))
    sp.add_argument("--pte", required=True)
    sp.add_argument("--workdir", default="/data/local/tmp/deltallm")
    sp.add_argument("--prompt-lengths", type=int, nargs="+", default=[32])
    sp.add_argument("--decode-lengths", type=int, nargs="+", default=[16])
    sp.add_argument("--warmup", type=int, default=1)
    sp.add_argument("--reps", type=int, default=3)
    sp.add_argument("--threads", type=int, default=0)
    sp.add_argument("--cpu-mask")
    sp.add_argument("--thermal-limit-c", type=float)
    sp.add_argument("--cooldown-s", type=float, default=0.0)
    sp.add_argument("--run-timeout-s", type=float, default=1800.0)
    sp.add_argument("--python", default="python3", help="the device's Python (boards, virtual device)")
    sp.add_argument("--runner", choices=["auto", "native", "python", "android"], default="auto",
                    help="native: the static runner for the device's ABI (python -m device build-runner); "
                         "python: device.runner over the shell (boards with Python); android: the app's "
                         "benchmark mode (am start); auto: native when built for the device's ABI, else python")
    sp.add_argument("--runner-binary", help="native: this deltallm_runner instead of the cached build")
    sp.add_argument("--cpus", help="pin the runner to these CPUs, e.g. 4-7 (the big cores)")
    sp.add_argument("--prompt-file", help="text to tokenise for the prompts (default: a shipped English passage)")
    sp.add_argument("--random-prompt", action="store_true", help="random token ids instead of text")
    sp.add_argument("--repeat-prompt", action="store_true",
                    help="repeat a --prompt-file shorter than the longest prompt (else refused: repeated text "
                         "gives a sparsity real text would not)")
    sp.add_argument("--format", choices=["md", "csv", "json", "jsonl"], default="md")
    sp.add_argument("--results-dir", help="write results.{md,csv,json,jsonl} here as each cell finishes")
    sp.add_argument("--overwrite", action="store_true", help="replace the results already in --results-dir")
    def with_generation(sp, max_new: int, json_help: str, timeout_s: float, timeout_help: str = None):
        """What generate and chat share: the program, sampling, threads, the runner and its folder."""
        sp.add_argument("--pte", required=True)
        sp.add_argument("--max-new-tokens", type=int, default=max_new)
        sp.add_argument("--temperature", type=float, default=0.0)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--threads", type=int, default=0)
        sp.add_argument("--cpus")
        sp.add_argument("--runner-binary")
        sp.add_argument("--workdir", default="/data/local/tmp/deltallm")
        sp.add_argument("--json", action="store_true", help=json_help)
        sp.add_argument("--timeout-s", type=float, default=timeout_s, help=timeout_help)
        return sp

    sp = with_generation(with_device(sub.add_parser("generate", help="one answer from a program on the device "
                                                                     "(native runner)")),
                         64, "print the whole result (tokens, timings, sparsity)", 1800.0)
    sp.add_argument("--prompt", required=True)
    sp.add_argument("--system", help="system prompt (chat template)")
    sp.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    sp = with_generation(with_device(sub.add_parser("chat", help="interactive chat on the device (persistent native "
                                                                 "runner, the cache reused across turns)")),
                         256, "one JSON object per answer (text and figures) on stdout", 600.0,
                         "longest wait for the runner's next token")
    sp.add_argument("--system", help="system prompt (kept when the context fills)")
    # Listed for --help; main() hands their arguments to device/native_build.py's own parsers.
    sub.add_parser("build-runner", help="build the native runner and JNI library (ExecuTorch from source + our "
                                        "kernels); see its --help")
    sub.add_parser("stage-source", help="print the staged ExecuTorch source tree native builds use")
    sp = sub.add_parser("report", help="re-format a results.json")
    sp.add_argument("results")
    sp.add_argument("--format", choices=["md", "csv", "json", "jsonl"], default="md")
    sp = sub.add_parser("plot", help="PNG plots of a results.json (latency vs prompt, sparsity per layer)")
    sp.add_argument("results")
    sp.add_argument("--out-dir", default=".")
    sp = sub.add_parser("virtual", help="run a virtual ADB device on 127.0.0.1",
                        description="A protocol-faithful ADB daemon on 127.0.0.1 (an ephemeral port) whose file "
                                    "system is a folder and whose shell runs the device ABI's executables "
                                    "(arm64 under qemu-aarch64-static); it prints its HOST:PORT and stops itself.")
    sp.add_argument("--root", required=True, help="folder that holds the device's file system (created)")
    sp.add_argument("--port-file", help="also write the port to this file (for scripts)")
    sp.add_argument("--lifetime-s", type=float, default=3600.0, help="stop after this many seconds (default 3600)")
    sp.add_argument("--refuse-keys", action="store_true", help="refuse every ADB key, as a phone whose user says no")
    sp.add_argument("--abi", choices=["arm64-v8a", "x86_64"], default="arm64-v8a",
                    help="the device's CPU: arm64-v8a runs aarch64 executables under qemu-aarch64-static")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build-runner"]:
        from .native_build import main as build_main

        return build_main(argv[1:])
    if argv[:1] == ["stage-source"]:
        from .native_build import stage_main

        return stage_main(argv[1:])
    ns = build_parser().parse_args(argv)
    from .preflight import InputError

    try:
        if ns.command in ("info", "shell", "push", "pull", "generate", "chat"):
            from .preflight import device_address, local_file

            device_address(ns.device)
            if ns.command == "push":
                local_file("local", ns.local)
        if ns.command == "bench":
            return cmd_bench(ns)
        if ns.command == "generate":
            from .generate import cmd_generate, prepare

            return cmd_generate(ns, prepare(ns), lambda: _transport(ns))
        if ns.command == "chat":
            from .generate import cmd_chat, prepare

            return cmd_chat(ns, prepare(ns), lambda: _transport(ns))
        if ns.command == "report":
            return cmd_report(ns)
        if ns.command == "virtual":
            return cmd_virtual(ns)
        if ns.command == "plot":
            return cmd_plot(ns)
        t = _transport(ns)
        try:
            if ns.command == "info":
                from .info import device_info

                print(json.dumps(device_info(t), indent=2))
            elif ns.command == "shell":
                r = t.shell(ns.argv, ns.timeout_s)
                sys.stdout.write(r.output)
                return r.exit_code
            elif ns.command == "push":
                from .push import push_verified

                pushed = push_verified(t, Path(ns.local), ns.remote)
                print(f"{ns.remote}: {'pushed, verified' if pushed else 'unchanged, skipped'}")
            elif ns.command == "pull":
                t.pull(ns.remote, Path(ns.local))
                print(ns.local)
        finally:
            t.close()
    except (DeviceError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
