"""Verified pushes: skip a file already on the device unchanged, retry a failed push a bounded
number of times (reconnecting), and verify every push by checksum on the device. A push goes to
`<remote>.part` and is renamed only once verified, so a failed push leaves no partial file."""
from __future__ import annotations

import hashlib
import posixpath
import shlex
import sys
from pathlib import Path
from typing import Optional

from .errors import DeviceError, StorageFull
from .transport import Progress, Transport


def local_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def device_hash_tool(t: Transport, timeout_s: float = 30.0) -> str:
    """sha256sum or md5sum, whichever the device has."""
    for tool, algo in (("sha256sum", "sha256"), ("md5sum", "md5")):
        if t.shell(f"command -v {tool} >/dev/null 2>&1", timeout_s).exit_code == 0:
            return algo
    raise DeviceError(t.name, "checksum", "the device has neither sha256sum nor md5sum")


def device_digest(t: Transport, remote: str, algo: str, timeout_s: float = 120.0) -> Optional[str]:
    # Through stdin: sha256sum escapes odd file names (newlines, backslashes) in its output.
    r = t.shell(f"{algo}sum < {shlex.quote(remote)}", timeout_s)
    if r.exit_code != 0 or not r.output.strip():
        return None
    return r.output.split()[0]


def push_verified(t: Transport, local: Path, remote: str, retries: int = 3, timeout_s: float = 300.0,
                  progress: Progress = None, algo: Optional[str] = None, sha256: Optional[str] = None) -> bool:
    """Push `local` to `remote` unless the same bytes are there. Returns True if it pushed.
    `sha256`: the file's digest when the caller already knows it (a program's, from its checked
    manifest), so a large program is not read once more to hash it."""
    algo = algo or device_hash_tool(t)
    want = sha256 if sha256 and algo == "sha256" else local_digest(local, algo)
    if device_digest(t, remote, algo) == want:
        return False
    t.check(["mkdir", "-p", posixpath.dirname(remote)], f"mkdir {posixpath.dirname(remote)}")
    part = remote + ".part"
    try:
        return _push_attempts(t, local, remote, part, want, algo, retries, timeout_s, progress)
    finally:
        try:
            t.shell(["rm", "-f", part], 30)
        except DeviceError:   # the device is gone: the push's own error is the one to report
            pass


def _push_attempts(t: Transport, local: Path, remote: str, part: str, want: str, algo: str, retries: int,
                   timeout_s: float, progress: Progress) -> bool:
    last: Optional[Exception] = None
    for attempt in range(1, retries + 1):
        try:
            t.push(local, part, timeout_s=timeout_s, progress=progress)
            got = device_digest(t, part, algo)
            if got == want:
                t.check(["mv", "-f", part, remote], f"rename {part}")
                return True
            last = DeviceError(t.name, f"push {remote}", f"checksum mismatch after push ({got} != {want})")
        except StorageFull:
            from .info import free_bytes

            free = free_bytes(t, posixpath.dirname(remote))
            raise StorageFull(t.name, f"push {remote}", f"No space left on device: {local.name} needs "
                                                        f"{local.stat().st_size / 1e6:.1f} MB"
                              + (f", {free / 1e6:.1f} MB free in {posixpath.dirname(remote)}" if free is not None else "")
                              + " (not retried)") from None
        except DeviceError as e:
            last = e
        print(f"{t.name}: push {remote} failed (attempt {attempt}/{retries}): {last}", file=sys.stderr)
    raise DeviceError(t.name, f"push {remote}", f"failed after {retries} attempts: {last}")
