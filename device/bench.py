"""A disciplined benchmark over any transport: runner chosen for the device's ABI, storage
checked, pushes verified, thermal gate, cpufreq snapshots, one runner invocation per
(prompt length, decode length), result pulled and checked.

Runners: `native` (the static deltallm_runner built for the device's ABI by
`python -m device build-runner`; phones and boards), `python` (device/runner.py, for boards that
have Python and our package), `android` (the app's benchmark mode), `auto` (native when a build
for the device's ABI exists, else python). Prompts are real text tokenised on the host
(device/prompts.py) and pushed as int32 ids."""
from __future__ import annotations

import json
import posixpath
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .errors import DeviceError
from .info import cpufreq, device_abi, device_info, free_bytes, max_temperature_c
from .push import local_digest, push_verified
from .results import BenchResult, mean_std
from .runner import PROTOCOL
from .transport import Transport, quote_args

RUNNERS = ("auto", "native", "python", "android")
NATIVE_NAME = "deltallm_runner"
IDS_NAME = "prompt_ids.bin"
PID_NAME = "runner.pid"


@dataclass
class DeviceFiles:
    """Where a run's files live on the device: a folder per program under the workdir, named by the
    program's sha256 (its manifest, tokenizer, prompt ids and results beside it, so programs never
    overwrite each other's files); the native runner by its own sha256; one pid file for whichever
    runner is running, so a runner left behind by a killed host command is stopped by the next one."""

    workdir: str
    program_sha256: str
    runner_sha256: str = ""

    @property
    def folder(self) -> str:
        return posixpath.join(self.workdir, self.program_sha256[:16])

    def path(self, name: str) -> str:
        return posixpath.join(self.folder, name)

    @property
    def runner(self) -> str:
        return posixpath.join(self.workdir, f"{NATIVE_NAME}-{self.runner_sha256[:12]}")

    @property
    def pidfile(self) -> str:
        return posixpath.join(self.workdir, PID_NAME)

    def launch(self, cmd: List[str]) -> str:
        """A shell line that stops a runner still recorded in the pid file (only if it is one of
        ours), records this one and runs `cmd` in the program's folder."""
        pid = quote_args([self.pidfile])
        return (f"p=$(cat {pid} 2>/dev/null) && grep -q runner /proc/$p/cmdline 2>/dev/null && kill $p 2>/dev/null; "
                f"cd {quote_args([self.folder])} && {{ {quote_args(cmd)} 2>&1 & echo $! > {pid}; wait $!; }}")

    def launch_foreground(self, cmd: List[str]) -> str:
        """As launch, but the shell becomes `cmd` (exec), so it keeps the stream's stdin (an
        asynchronous command's stdin would be /dev/null)."""
        pid = quote_args([self.pidfile])
        return (f"p=$(cat {pid} 2>/dev/null) && grep -q runner /proc/$p/cmdline 2>/dev/null && kill $p 2>/dev/null; "
                f"cd {quote_args([self.folder])} && echo $$ > {pid} && exec {quote_args(cmd)}")

    def finished(self, t: Transport) -> None:
        t.shell(["rm", "-f", self.pidfile], 30)


def program_sha256(pte: Path, manifest: dict) -> str:
    sha = manifest.get("pte_sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else local_digest(pte, "sha256")


@dataclass
class BenchPlan:
    pte: Path
    workdir: str = "/data/local/tmp/deltallm"
    prompt_lengths: List[int] = field(default_factory=lambda: [32])
    decode_lengths: List[int] = field(default_factory=lambda: [16])
    warmup: int = 1
    reps: int = 3
    threads: int = 0
    cpu_mask: Optional[str] = None          # taskset mask, e.g. "f0" for the big cores
    thermal_limit_c: Optional[float] = None  # wait until the hottest zone is below this
    cooldown_s: float = 0.0                  # or always wait this long before a measurement
    max_thermal_wait_s: float = 300.0
    run_timeout_s: float = 1800.0
    python: str = "python3"
    runner: str = "auto"                     # see RUNNERS and the module doc
    runner_binary: Optional[Path] = None     # native: this binary instead of the cached build
    cpus: Optional[str] = None               # CPU list for the runner's affinity, e.g. "4-7" (big cores)
    prompt_file: Optional[Path] = None       # text to tokenise (default: the shipped English passage)
    random_prompt: bool = False              # random ids instead of text (sparsity is then not realistic)
    prompt_ids: Optional[List[int]] = None   # made by the caller (the CLI checks them before connecting)


class ProgressBar:
    """A push progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str, width: int = 30):
        self.label, self.width, self.tty = label, width, sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.tty or not total:
            return
        filled = int(self.width * done / total)
        sys.stderr.write(f"\r  {self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _thermal_gate(t: Transport, plan: BenchPlan) -> Optional[float]:
    if plan.cooldown_s:
        time.sleep(plan.cooldown_s)
    temp = max_temperature_c(t)
    if plan.thermal_limit_c is None or temp is None:
        return temp
    deadline = time.monotonic() + plan.max_thermal_wait_s
    while temp is not None and temp > plan.thermal_limit_c:
        if time.monotonic() > deadline:
            raise DeviceError(t.name, "thermal gate", f"still {temp:.1f} C after {plan.max_thermal_wait_s:g} s "
                                                      f"(limit {plan.thermal_limit_c:g} C)")
        time.sleep(2.0)
        temp = max_temperature_c(t)
    return temp


def _load_result(t: Transport, remote: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "result.json"
        if t.stat(remote) is None:
            raise DeviceError(t.name, "result", f"{remote} is missing (the runner wrote no result)")
        t.pull(remote, local)
        try:
            data = json.loads(local.read_text())
            if data.get("protocol") != PROTOCOL or not isinstance(data.get("configs"), list) or not data["configs"]:
                raise ValueError(f"not a {PROTOCOL} result")
            for c in data["configs"]:
                for k in ("ttft_ms", "prefill_tps", "decode_tps"):
                    if not all(isinstance(x, (int, float)) for x in c["samples"][k]):
                        raise ValueError(f"bad samples for {k}")
        except (ValueError, KeyError, TypeError) as e:
            raise DeviceError(t.name, "result", f"{remote} is malformed: {e}") from e
    return data


def _run_shell_runner(t: Transport, plan: BenchPlan, runner: str, files: DeviceFiles, remote_pte: str,
                      remote_ids: str, p: int, d: int, temp, log) -> dict:
    """The native or the Python runner over the shell: one (prompt, decode) configuration."""
    remote_bin = files.runner
    out = files.path(f"result_p{p}_d{d}.json")
    t.shell(["rm", "-f", out, out[: -len(".json")] + ".done"], 30)
    common = ["--pte", remote_pte, "--prompt-ids", remote_ids, "--out", out, "--prompt-lengths", str(p),
              "--decode-lengths", str(d), "--warmup", str(plan.warmup), "--reps", str(plan.reps),
              "--threads", str(plan.threads)]
    if runner == "native":
        cmd = [remote_bin, "bench", *common] + (["--cpus", plan.cpus] if plan.cpus else [])
    else:
        cmd = (["taskset", "-c", plan.cpus] if plan.cpus else []) + [plan.python, "-m", "device.runner", *common]
    if plan.cpu_mask:
        cmd = ["taskset", plan.cpu_mask] + cmd
    log(f"run {runner} prompt={p} decode={d} reps={plan.reps} (hottest zone {temp if temp is not None else '?'} C)")
    r = t.shell(files.launch(cmd), plan.run_timeout_s)
    files.finished(t)
    if r.exit_code != 0:
        tail = " | ".join(r.output.strip().splitlines()[-3:])
        raise DeviceError(t.name, f"run prompt={p} decode={d}", f"{runner} runner exited with {r.exit_code}: {tail}")
    return _load_result(t, out)


def _run_android(t: Transport, plan: BenchPlan, files: DeviceFiles, remote_pte: str, remote_ids: str, p: int, d: int,
                 log) -> dict:
    """The app's benchmark mode: am start with extras, poll for the marker, pull the JSON."""
    from . import android_protocol as ap

    run_id = f"p{p}_d{d}_{int(time.time() * 1000)}"
    tok = files.path("tokenizer.json")
    log(f"am start benchmark run {run_id}")
    t.check(ap.launch_command(run_id, remote_pte, tok, [p], [d], plan.warmup, plan.reps, plan.threads, remote_ids),
            f"am start {run_id}")
    deadline = time.monotonic() + plan.run_timeout_s
    while t.stat(ap.done_path(run_id)) is None:
        if time.monotonic() > deadline:
            raise DeviceError(t.name, f"run {run_id}", f"no completion marker after {plan.run_timeout_s:g} s")
        time.sleep(0.5)
    marker = t.shell(["cat", ap.done_path(run_id)], 30).output.strip()
    if marker != "ok":
        raise DeviceError(t.name, f"run {run_id}", f"the app reported {marker!r}")
    return _load_result(t, ap.result_path(run_id))


def resolve_runner(t: Transport, plan: BenchPlan, abi: str):
    """(runner, local native binary or None, its sha256 or "") for this device."""
    if plan.runner not in RUNNERS:
        raise DeviceError(t.name, "plan", f"--runner {plan.runner}: expected one of {', '.join(RUNNERS)}")
    if plan.runner in ("python", "android"):
        return plan.runner, None, ""
    from .native_build import ABIS, abi_of_binary, cached_runner

    binary = Path(plan.runner_binary) if plan.runner_binary else None
    if binary is None:
        hit = cached_runner(abi) if abi in ABIS else None
        if hit is None:
            if plan.runner == "auto":
                return "python", None, ""
            raise DeviceError(t.name, "runner", f"no native runner built for the device's ABI {abi}: "
                                                f"python -m device build-runner --abi {abi}"
                              if abi in ABIS else f"no native runner for ABI {abi} (we build {', '.join(ABIS)})")
        binary = Path(hit.binary)
    if not binary.is_file():
        raise DeviceError(t.name, "runner", f"{binary} does not exist")
    built_for = abi_of_binary(binary)
    if built_for != abi:
        raise DeviceError(t.name, "runner", f"{binary} is built for {built_for or 'no known ABI (not an ELF file)'}, "
                                            f"but the device's ABI is {abi}")
    return "native", binary, local_digest(binary, "sha256")


def check_storage(t: Transport, plan: BenchPlan, pushes: List[tuple]) -> None:
    """Fail before pushing when the device lacks room for what is not there yet ((local, remote) pairs)."""
    free = free_bytes(t, plan.workdir)
    if free is None:
        return
    need = 0
    for f, remote in pushes:
        there = t.stat(remote)
        need += max(0, f.stat().st_size - (there[1] if there else 0))
    if need > free:
        raise DeviceError(t.name, "storage", f"not enough free storage in {plan.workdir}: the push needs "
                                             f"{need / 1e6:.1f} MB, the device has {free / 1e6:.1f} MB free")


def run_bench(t: Transport, plan: BenchPlan, log=lambda m: print(m, file=sys.stderr),
              on_result: Callable[[BenchResult], None] = lambda r: None) -> List[BenchResult]:
    """Every (prompt, decode) cell of the plan; `on_result` sees each row as its cell finishes, so
    a caller can keep the finished cells of a run that fails later."""
    from .prompts import PromptError, bench_prompt_ids, write_ids

    pte = Path(plan.pte)
    manifest_path = pte.with_suffix(".json")
    if not pte.is_file():
        raise DeviceError(t.name, "plan", f"{pte} does not exist")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    abi = device_abi(t)
    runner, binary, binary_sha = resolve_runner(t, plan, abi)
    log(f"device ABI {abi}; runner {runner}" + (f" ({binary})" if binary else ""))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ids = plan.prompt_ids or bench_prompt_ids(pte, manifest, max(plan.prompt_lengths), plan.prompt_file,
                                                      plan.random_prompt)
        except PromptError as e:
            raise DeviceError(t.name, "prompt", str(e)) from e
        ids_file = write_ids(ids, Path(tmp) / IDS_NAME)
        files = DeviceFiles(plan.workdir, program_sha256(pte, manifest), binary_sha)
        pushes = [(f, files.path(f.name)) for f in [pte, manifest_path, pte.parent / "tokenizer.json", ids_file]
                  if f.is_file()]
        if binary is not None:
            pushes.append((binary, files.runner))
        check_storage(t, plan, pushes)
        for f, remote in pushes:
            log(f"push {f.name} -> {remote}")
            pushed = push_verified(t, f, remote, progress=ProgressBar(f.name),
                                   sha256=files.program_sha256 if f == pte else None)
            log(f"  {'pushed and verified' if pushed else 'unchanged on device, skipped'}")
    remote_pte = files.path(pte.name)
    remote_ids = files.path(IDS_NAME)
    if binary is not None:
        t.check(["chmod", "755", files.runner], "chmod runner")
    info = device_info(t)
    results = []
    for p in plan.prompt_lengths:
        for d in plan.decode_lengths:
            temp = _thermal_gate(t, plan)
            before = cpufreq(t)
            if runner == "android":
                data = _run_android(t, plan, files, remote_pte, remote_ids, p, d, log)
            else:
                data = _run_shell_runner(t, plan, runner, files, remote_pte, remote_ids, p, d, temp, log)
            after = cpufreq(t)
            c = data["configs"][0]
            s = c["samples"]
            sp = c.get("sparsity") or {}
            pre, dec = (sp.get("prefill") or {}).get("total"), (sp.get("decode") or {}).get("total")
            attention = manifest.get("attention", {})
            results.append(BenchResult(
                device=str(info.get("model") or t.name), model=manifest.get("name", pte.stem),
                quantization=(manifest.get("quantization") or {}).get("linear", "?"),
                attention=attention.get("kind", "?") + (f"(θ={attention.get('theta')})" if attention.get("kind") == "delta" else ""),
                threads=int(data.get("threads") or plan.threads), prompt_tokens=p, decode_tokens=d, repetitions=plan.reps,
                load_ms=data["load_ms"],
                ttft_ms_avg=mean_std(s["ttft_ms"])[0], ttft_ms_std=mean_std(s["ttft_ms"])[1],
                prefill_tps_avg=mean_std(s["prefill_tps"])[0], prefill_tps_std=mean_std(s["prefill_tps"])[1],
                decode_tps_avg=mean_std(s["decode_tps"])[0], decode_tps_std=mean_std(s["decode_tps"])[1],
                peak_rss_mb=data["peak_rss_mb"],
                prefill_s_m=pre["s_m"] if pre and pre.get("macs_dense") else None,
                prefill_s_c=pre["s_c"] if pre and pre.get("macs_dense") else None,
                decode_s_m=dec["s_m"] if dec and dec.get("macs_dense") else None,
                decode_s_c=dec["s_c"] if dec and dec.get("macs_dense") else None,
                thermal_c_before=temp, cooldown_s=plan.cooldown_s,
                runner=data.get("runner", runner), abi=data.get("abi", abi), binary_sha256=binary_sha,
                ttft_ms=s["ttft_ms"], prefill_tps=s["prefill_tps"], decode_tps=s["decode_tps"],
                sparsity_layers=(sp.get("prefill") or {}).get("layers", []) + (sp.get("decode") or {}).get("layers", []),
                device_info=info, manifest={k: manifest.get(k) for k in ("name", "quantization", "attention",
                                                                          "architecture", "pte_bytes")},
                cpufreq_before=before, cpufreq_after=after))
            on_result(results[-1])
    return results
