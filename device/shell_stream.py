"""One long-running command with its stdin open: the device's (ADB shell protocol v2, through
adb-shell's connection) or the host's (a subprocess). `python -m device chat` talks to a
persistent runner through it.

Everything happens on the caller's thread: `read(timeout_s)` waits for output at most that long,
and a write goes out between reads, so nothing holds adb-shell's transport lock while waiting for
a device that has nothing to say (a second thread's send would block behind it).
"""
from __future__ import annotations

import os
import selectors
import struct
import subprocess
import time
from abc import ABC, abstractmethod
from typing import List, Optional, Sequence, Tuple

from .errors import DeviceError, DeviceTimeout

STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN = 0, 1, 2, 3, 4   # shell protocol v2 packet ids


class ShellStream(ABC):
    """stdin in, (STDOUT | STDERR, bytes) out; `exit_code` is set once the command has ended."""

    exit_code: Optional[int] = None

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def close_stdin(self) -> None: ...

    @abstractmethod
    def read(self, timeout_s: float) -> List[Tuple[int, bytes]]:
        """Output that arrived within timeout_s ([] if none; [] for good once the command ended)."""

    @abstractmethod
    def close(self) -> None: ...


class LocalShellStream(ShellStream):
    """A host process (the x86-64 runner in benchmarks and tests)."""

    def __init__(self, argv: Sequence[str], cwd: Optional[str] = None):
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ, STDOUT)
        self._sel.register(self.proc.stderr, selectors.EVENT_READ, STDERR)

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise DeviceError("host", "write", f"the command has ended ({e})") from e

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def read(self, timeout_s: float) -> List[Tuple[int, bytes]]:
        out = []
        if not self._sel.get_map():
            self.exit_code = self.proc.wait()
            return out
        for key, _ in self._sel.select(timeout_s):
            data = os.read(key.fileobj.fileno(), 65536)
            if data:
                out.append((key.data, data))
            else:
                self._sel.unregister(key.fileobj)
        if not self._sel.get_map():
            self.exit_code = self.proc.wait()
        return out

    def close(self) -> None:
        self.close_stdin()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.exit_code = self.proc.returncode
        self._sel.close()


class AdbShellStream(ShellStream):
    """`shell,v2:COMMAND` on an adb-shell AdbDevice. Uses adb-shell's stream internals (OPEN, WRTE,
    OKAY, CLSE on its I/O manager), which its public API does not offer for a stream with stdin;
    adb-shell is pinned below 0.5 for it."""

    def __init__(self, name: str, dev, sock, command: str, timeout_s: float):
        from adb_shell import constants
        from adb_shell.adb_message import AdbMessage

        self._c, self._msg = constants, AdbMessage
        self.name, self._dev, self._sock, self.timeout_s = name, dev, sock, timeout_s
        self._info = dev._open(b"shell,v2:" + command.encode(), timeout_s, timeout_s, None)
        self._acked = True           # adbd takes one unacknowledged WRTE per stream
        self._pending: List[bytes] = []
        self._buf = bytearray()
        self._closed = False

    def _send(self, payload: bytes) -> None:
        self._pending.append(payload)
        self._flush()

    def _flush(self) -> None:
        while self._pending and self._acked and not self._closed:
            msg = self._msg(self._c.WRTE, self._info.local_id, self._info.remote_id, self._pending.pop(0))
            self._dev._io_manager.send(msg, self._info)
            self._acked = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise DeviceError(self.name, "write", "the command has ended")
        self._send(struct.pack("<BI", STDIN, len(data)) + data)

    def close_stdin(self) -> None:
        if not self._closed:
            self._send(struct.pack("<BI", CLOSE_STDIN, 0))

    def _packet(self) -> None:
        c = self._c
        cmd, _, _, data = self._dev._io_manager.read([c.CLSE, c.WRTE, c.OKAY], self._info, allow_zeros=True)
        if cmd == c.OKAY:
            self._acked = True
        elif cmd == c.CLSE:
            self._closed = True
            self._dev._io_manager.send(self._msg(c.CLSE, self._info.local_id, self._info.remote_id), self._info)
        else:
            self._dev._okay(self._info)
            self._buf += data

    def read(self, timeout_s: float) -> List[Tuple[int, bytes]]:
        from adb_shell.exceptions import AdbTimeoutError, TcpTimeoutException

        import select

        deadline = time.monotonic() + timeout_s
        out: List[Tuple[int, bytes]] = []
        try:
            while not self._closed:
                self._flush()
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._sock], [], [], max(0.0, left))
                if not ready:
                    break
                self._packet()      # a packet is arriving: read it whole
                out += self._parse()
                if out:
                    break
        except (AdbTimeoutError, TcpTimeoutException) as e:
            raise DeviceTimeout(self.name, "shell stream", f"a packet did not arrive whole within {self.timeout_s:g} s") from e
        except (OSError, ConnectionError) as e:
            raise DeviceError(self.name, "shell stream", f"{type(e).__name__}: {e}") from e
        if self._closed and self.exit_code is None:
            out += self._parse()
            if self.exit_code is None:
                self.exit_code = 255
        return out

    def _parse(self) -> List[Tuple[int, bytes]]:
        out = []
        while len(self._buf) >= 5:
            kind, n = struct.unpack("<BI", self._buf[:5])
            if len(self._buf) < 5 + n:
                break
            payload = bytes(self._buf[5:5 + n])
            del self._buf[:5 + n]
            if kind == EXIT:
                self.exit_code = payload[0] if payload else 255
            elif kind in (STDOUT, STDERR):
                out.append((kind, payload))
        return out

    def close(self) -> None:
        if not self._closed:
            try:
                self._dev._io_manager.send(self._msg(self._c.CLSE, self._info.local_id, self._info.remote_id),
                                           self._info)
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
            self._closed = True
