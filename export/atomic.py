"""Atomic file writes: write to a temp file in the target folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(target: Path) -> Path:
    """A temp file beside `target` with the mode a plain open() would give (mkstemp's is 0600,
    which would leave outputs unreadable to other users, e.g. an app's user after adb push)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def probe_write(folder: Path) -> None:
    """A real write in `folder` (os.access says yes to root on read-only file systems and /sys): a
    probe file created and removed at once. Raises OSError when the folder cannot be written."""
    fd, probe = tempfile.mkstemp(prefix=".deltallm-write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp file; on success it replaces `target`, else it is removed."""
    tmp = temp_path_for(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: Path, data: bytes) -> None:
    write_atomic(target, lambda p: p.write_bytes(data))


def write_json_atomic(target: Path, obj) -> None:
    write_atomic(target, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))
