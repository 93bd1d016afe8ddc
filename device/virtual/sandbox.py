"""Device paths inside a sandbox folder: /data, /sdcard (and /storage/emulated/0) map below
the sandbox root, so nothing the virtual device does touches the host's own paths."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

MAPPED = ("/data", "/sdcard", "/storage/emulated/0")
VIRTUAL_SYS = ("/sys/class/thermal", "/sys/devices/system/cpu")   # served from the sandbox too
_PATTERN = re.compile(r"(?<![\w./-])(/storage/emulated/0|/sdcard|/data|/sys/class/thermal|/sys/devices/system/cpu)"
                      r"(?=/|\b|$)")


class SandboxError(Exception):
    pass


class Sandbox:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        for sub in ("data/local/tmp", "sdcard", "system/bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

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
        """Rewrite absolute device paths in a shell command to their sandbox locations."""
        return _PATTERN.sub(lambda m: str(self._prefix(m.group(1))), command)

    @property
    def cwd(self) -> Path:
        return self.root / "data" / "local" / "tmp"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "LD_LIBRARY_PATH")}
        env.update({"HOME": str(self.cwd), "TMPDIR": str(self.cwd), "ANDROID_DATA": str(self.root / "data"),
                    "EXTERNAL_STORAGE": str(self.root / "sdcard")})
        env["PATH"] = f"{self.root / 'system' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
