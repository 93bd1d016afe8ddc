"""Device information over any transport; whatever a device lacks is left out (an embedded
Linux board has no getprop or dumpsys)."""
from __future__ import annotations

import re
from typing import Dict, Optional

from .transport import Transport

PROPS = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer", "hardware": "ro.hardware",
         "soc": "ro.soc.model", "abi": "ro.product.cpu.abi", "android_version": "ro.build.version.release",
         "sdk": "ro.build.version.sdk"}


def _out(t: Transport, cmd: str, timeout_s: float) -> str:
    r = t.shell(cmd + " 2>/dev/null", timeout_s)
    return r.output.strip() if r.exit_code == 0 else ""


def max_temperature_c(t: Transport, timeout_s: float = 15.0) -> Optional[float]:
    raw = _out(t, "cat /sys/class/thermal/thermal_zone*/temp", timeout_s)
    temps = [int(x) for x in raw.split() if x.lstrip("-").isdigit()]
    return max(temps) / 1000.0 if temps else None


def cpufreq(t: Transport, timeout_s: float = 15.0) -> Dict[str, int]:
    raw = _out(t, "for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq; do echo \"$f $(cat $f)\"; done",
               timeout_s)
    out = {}
    for line in raw.splitlines():
        m = re.match(r".*/(cpu\d+)/cpufreq/\S+ (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


MACHINE_TO_ABI = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "armv8l": "armeabi-v7a", "armv7l": "armeabi-v7a",
                  "x86_64": "x86_64", "amd64": "x86_64", "i686": "x86"}


def device_abi(t: Transport, timeout_s: float = 15.0) -> str:
    """The device's primary ABI: first of `getprop ro.product.cpu.abilist` (Android), else from
    `uname -m` (Linux boards). Raises DeviceError when neither answers."""
    from .errors import DeviceError

    abilist = _out(t, "getprop ro.product.cpu.abilist", timeout_s)
    if abilist:
        return abilist.split(",")[0].strip()
    machine = _out(t, "uname -m", timeout_s)
    if machine:
        return MACHINE_TO_ABI.get(machine.lower(), machine)
    raise DeviceError(t.name, "abi", "neither getprop ro.product.cpu.abilist nor uname -m answered")


def free_bytes(t: Transport, path: str, timeout_s: float = 15.0) -> Optional[int]:
    """Free bytes on the file system holding `path` (its nearest existing parent), from `df -k`;
    None when the device's df does not say."""
    probe = f'p={_quote(path)}; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done; df -k "$p"'
    lines = _out(t, probe, timeout_s).splitlines()
    if len(lines) < 2:
        return None
    fields = " ".join(lines[1:]).split()
    # Filesystem 1K-blocks Used Available Use% Mounted-on (toybox and coreutils alike)
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def device_info(t: Transport, timeout_s: float = 15.0) -> Dict[str, object]:
    info: Dict[str, object] = {"address": t.name}
    for key, prop in PROPS.items():
        value = _out(t, f"getprop {prop}", timeout_s)
        if value:
            info[key] = value
    info["machine"] = _out(t, "uname -m", timeout_s) or None
    cores = _out(t, "nproc", timeout_s) or _out(t, "grep -c ^processor /proc/cpuinfo", timeout_s)
    info["cores"] = int(cores) if cores.isdigit() else None
    freqs = _out(t, "cat /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq", timeout_s).split()
    info["max_freq_khz"] = [int(f) for f in freqs if f.isdigit()]
    mem = re.search(r"MemTotal:\s+(\d+)", _out(t, "cat /proc/meminfo", timeout_s))
    info["mem_total_mb"] = int(mem.group(1)) // 1024 if mem else None
    zones = _out(t, "for z in /sys/class/thermal/thermal_zone*; do echo \"$(cat $z/type) $(cat $z/temp)\"; done",
                 timeout_s)
    info["thermal_zones"] = {p[0]: int(p[1]) / 1000 for p in (l.split() for l in zones.splitlines())
                             if len(p) == 2 and p[1].lstrip("-").isdigit()}
    battery = _out(t, "dumpsys battery", timeout_s)
    if battery:
        info["battery"] = {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in battery.splitlines()[1:]) if v}
    return info
