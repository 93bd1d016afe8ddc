"""Device paths inside a sandbox folder: /data, /sdcard (and /storage/emulated/0) map below
the sandbox root, so nothing the virtual device does touches the host's own paths.

The sandbox is also the device's CPU as far as programs go: an ELF executable stored in it runs
only if it is built for the device's ABI, as on a phone. An arm64 device runs aarch64 executables
under qemu-aarch64-static (when a command names one by its device path, directly or behind
`exec`, `taskset MASK`, `nice`); an executable for another machine fails as Android's shell does
("not executable: 64-bit ELF file", exit 126)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

MAPPED = ("/data", "/sdcard", "/storage/emulated/0")
VIRTUAL_SYS = ("/sys/class/thermal", "/sys/devices/system/cpu")   # served from the sandbox too
_PATTERN = re.compile(r"(?<![\w./-])(/storage/emulated/0|/sdcard|/data|/sys/class/thermal|/sys/devices/system/cpu)"
                      r"(?=/|\b|$)([^\s'\"`;|&<>()]*)")
# What may stand before a word for it to be the command a shell executes.
_COMMAND_POSITION = re.compile(r"(^|[;&|(){}\n]|\b(exec|then|do|else|time)|\btaskset(\s+-c)?\s+\S+|\bnice(\s+-n\s*-?\d+)?)"
                               r"\s*$")
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}       # e_machine -> `uname -m`
ABI_MACHINE = {"arm64-v8a": "aarch64", "x86_64": "x86_64"}
QEMU = {"aarch64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}


class SandboxError(Exception):
    pass


def elf_machine(path: Path):
    """`uname -m` of the machine an ELF file is built for; None if not an ELF executable."""
    from ..native_build import elf_machine as e_machine

    try:
        m = e_machine(path)
    except OSError:
        return None
    return None if m is None else ELF_MACHINES.get(m, f"elf-machine-{m}")


class Sandbox:
    def __init__(self, root: Path, abi: str = "arm64-v8a"):
        self.root = Path(root).resolve()
        if abi not in ABI_MACHINE:
            raise ValueError(f"abi: expected one of {', '.join(ABI_MACHINE)}, got {abi!r}")
        self.abi, self.machine = abi, ABI_MACHINE[abi]
        for sub in ("data/local/tmp", "sdcard", "system/bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_tools()

    def _write_tools(self) -> None:
        """`uname` answering the device's machine, and the exec helpers rewrite_command uses."""
        tools = {
            "uname": f'#!/bin/sh\nif [ "$1" = "-m" ]; then echo {self.machine}; exit 0; fi\nexec /bin/uname "$@"\n',
            "dlm-noexec": '#!/bin/sh\necho "/system/bin/sh: $1: not executable: 64-bit ELF file" >&2\nexit 126\n',
            "dlm-emulate": '#!/bin/sh\nq="$1"; shift\ncommand -v "$q" >/dev/null 2>&1 || '
                           '{ echo "virtual device: $q is not installed (apt-get install qemu-user-static)" >&2; exit 127; }\n'
                           'exec "$q" "$@"\n',
        }
        for name, text in tools.items():
            path = self.root / "system" / "bin" / name
            path.write_text(text)
            path.chmod(0o755)

    def _prefix(self, device_prefix: str) -> Path:
        if device_prefix in VIRTUAL_SYS:
            return self.root / device_prefix.lstrip("/")
        return self.root / ("sdcard" if device_prefix in ("/sdcard", "/storage/emulated/0") else "data")

    def set_temperature(self, zone: int, celsius: float, kind: str = "cpu-thermal") -> None:
        z = self.root / "sys" / "class" / "thermal" / f"thermal_zone{zone}"
        z.mkdir(parents=True, exist_ok=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{int(round(celsius * 1000))}\n")

    def set_cpufreq(self, cpu: int, cur_khz: int, max_khz: int) -> None:
        d = self.root / "sys" / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_cur_freq").write_text(f"{cur_khz}\n")
        (d / "cpuinfo_max_freq").write_text(f"{max_khz}\n")

    def host_path(self, device_path: str) -> Path:
        """Map an absolute device path; anything outside the mapped trees is refused."""
        if not device_path.startswith("/"):
            device_path = "/data/local/tmp/" + device_path
        norm = os.path.normpath(device_path)
        for prefix in MAPPED:
            if norm == prefix or norm.startswith(prefix + "/"):
                rel = norm[len(prefix):].lstrip("/")
                base = self._prefix(prefix)
                host = (base / rel).resolve() if rel else base
                if host != base and base not in host.parents:
                    raise SandboxError(f"{device_path}: escapes the sandbox")
                return host
        raise SandboxError(f"{device_path}: outside the device's writable storage")

    def rewrite_command(self, command: str) -> str:
        """Rewrite absolute device paths in a shell command to their sandbox locations; an ELF
        executable in command position runs as the device's CPU would run it (see the module doc)."""

        def sub(m: re.Match) -> str:
            host = str(self._prefix(m.group(1))) + m.group(2)
            if not _COMMAND_POSITION.search(command[: m.start()]):
                return host
            machine = elf_machine(Path(host)) if os.path.isfile(host) else None
            if machine is None:
                return host
            if machine != self.machine:
                return f"dlm-noexec {m.group(0)}"
            if machine != os.uname().machine:
                return f"dlm-emulate {QEMU.get(machine, 'qemu-' + machine)} {host}"
            return host

        return _PATTERN.sub(sub, command)

    @property
    def cwd(self) -> Path:
        return self.root / "data" / "local" / "tmp"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "LD_LIBRARY_PATH", "DLM_ANDROID_APP", "JAVA_HOME")}
        env.update({"HOME": str(self.cwd), "TMPDIR": str(self.cwd), "ANDROID_DATA": str(self.root / "data"),
                    "EXTERNAL_STORAGE": str(self.root / "sdcard")})
        env["PATH"] = f"{self.root / 'system' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
