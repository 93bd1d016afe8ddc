"""Streams and services of the virtual device: shell:, shell,v2:, exec:, sync:."""
from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import threading
from typing import Optional

from ..adb_protocol import CLSE, WRTE, Packet
from .sandbox import SandboxError

ACK_TIMEOUT_S = 60.0
SYNC_CHUNK = 64 * 1024
V2_STDIN, V2_STDOUT, V2_STDERR, V2_EXIT, V2_CLOSE_STDIN = 0, 1, 2, 3, 4


class StreamClosed(Exception):
    pass


class Stream:
    """One OPENed stream: writes wait for the host's OKAY; host data is buffered."""

    def __init__(self, conn, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self._ack = threading.Event()
        self._ack.set()
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._sent_close = False
        self.on_data = None   # optional callback instead of buffering

    # host -> device
    def received(self, data: bytes) -> None:
        if self.on_data:
            self.on_data(data)
            return
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def read_exact(self, n: int) -> bytes:
        with self._cond:
            while len(self._buf) < n:
                if self._closed:
                    raise StreamClosed()
                self._cond.wait(0.5)
                if self.conn.closed.is_set():
                    raise StreamClosed()
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

    def acked(self) -> None:
        self._ack.set()

    # device -> host
    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            chunk, view = view[: self.conn.max_data], view[self.conn.max_data:]
            if not self._ack.wait(ACK_TIMEOUT_S) or self._closed:
                raise StreamClosed()
            self._ack.clear()
            self.conn.send(Packet(WRTE, self.local_id, self.remote_id, bytes(chunk)))

    def close(self) -> None:
        """Our side is done, or the host closed the stream: answer CLSE once, stop waiting."""
        if not self._sent_close:
            self._sent_close = True
            try:
                self.conn.send(Packet(CLSE, self.local_id, self.remote_id))
            except OSError:
                pass
        self.abort()

    remote_closed = close

    def abort(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._ack.set()

    @property
    def closed(self) -> bool:
        return self._closed


# --------------------------------------------------------------------------- dispatch

def run_service(dev, stream: Stream, service: str) -> None:
    try:
        if service.startswith("shell,v2") or service.startswith("shell,raw") and ":" in service:
            _shell(dev, stream, service.split(":", 1)[1], v2=service.startswith("shell,v2"))
        elif service.startswith("shell:") or service.startswith("shell,"):
            _shell(dev, stream, service.split(":", 1)[1] if ":" in service else "", v2=False)
        elif service.startswith("exec:"):
            _shell(dev, stream, service[5:], v2=False, stdout_only=True)
        elif service.startswith("sync:"):
            SyncSession(dev, stream).run()
        else:
            stream.close()
            return
    except (StreamClosed, OSError):
        pass
    stream.close()


def _v2(kind: int, data: bytes) -> bytes:
    return struct.pack("<BI", kind, len(data)) + data


def _shell(dev, stream: Stream, command: str, v2: bool, stdout_only: bool = False) -> None:
    faults = dev.faults
    if any(h in command for h in faults.hang_commands):
        while not stream.closed and not dev.stopped.is_set():
            dev.stopped.wait(0.2)
        return
    if not command.strip():
        command = "exec /bin/sh"
    for prog in faults.crash_programs:   # the program itself crashes; the shell goes on
        command = f"{prog}() {{ echo 'Segmentation fault' >&2; sh -c 'kill -SEGV $$'; }}\n{command}"
    proc = subprocess.Popen(["/bin/sh", "-c", dev.sandbox.rewrite_command(command)], cwd=dev.sandbox.cwd,
                            env=dev.sandbox.env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL if stdout_only else (subprocess.PIPE if v2 else subprocess.STDOUT),
                            start_new_session=True)
    stdin_parser = _V2Stdin(proc) if v2 else None
    stream.on_data = stdin_parser.feed if v2 else (lambda d: _write_stdin(proc, d))
    lock = threading.Lock()

    def pump(pipe, kind):
        for chunk in iter(lambda: pipe.read1(SYNC_CHUNK) if hasattr(pipe, "read1") else pipe.read(4096), b""):
            with lock:
                stream.write(_v2(kind, chunk) if v2 else chunk)

    readers = [threading.Thread(target=pump, args=(proc.stdout, V2_STDOUT), daemon=True)]
    if v2:
        readers.append(threading.Thread(target=pump, args=(proc.stderr, V2_STDERR), daemon=True))
    for t in readers:
        t.start()
    while proc.poll() is None:
        if stream.closed or dev.stopped.is_set():
            _kill(proc)
            break
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    for t in readers:
        t.join(5)
    if v2 and not stream.closed:
        code = proc.returncode if proc.returncode is not None and proc.returncode >= 0 else 128 - (proc.returncode or 0)
        stream.write(_v2(V2_EXIT, bytes([code & 0xFF])))


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _write_stdin(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass


class _V2Stdin:
    """Parses shell-v2 packets arriving from the host (stdin data, close-stdin)."""

    def __init__(self, proc):
        self.proc, self.buf = proc, bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 5:
            kind, n = struct.unpack("<BI", self.buf[:5])
            if len(self.buf) < 5 + n:
                return
            payload = bytes(self.buf[5:5 + n])
            del self.buf[:5 + n]
            if kind == V2_STDIN:
                _write_stdin(self.proc, payload)
            elif kind == V2_CLOSE_STDIN:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------- sync

def _id(name: bytes, *ints: int) -> bytes:
    return name + struct.pack(f"<{len(ints)}I", *ints)


class SyncSession:
    def __init__(self, dev, stream: Stream):
        self.dev, self.stream, self.sandbox = dev, stream, dev.sandbox

    def run(self) -> None:
        while True:
            head = self.stream.read_exact(8)
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"QUIT":
                return
            arg = self.stream.read_exact(n).decode(errors="replace") if n else ""
            handler = {b"STAT": self.stat, b"LIST": self.list, b"SEND": self.send, b"RECV": self.recv}.get(cmd)
            if handler is None:
                self._fail(f"unknown sync request {cmd!r}")
                return
            handler(arg)

    def _fail(self, message: str) -> None:
        data = message.encode()
        self.stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _host(self, path: str):
        try:
            return self.sandbox.host_path(path)
        except SandboxError:
            return None

    def stat(self, path: str) -> None:
        host = self._host(path)
        if host is None or not host.exists():
            self.stream.write(_id(b"STAT", 0, 0, 0))
            return
        st = host.stat()
        self.stream.write(_id(b"STAT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))

    def list(self, path: str) -> None:
        host = self._host(path)
        out = bytearray()
        if host is not None and host.is_dir():
            for name, p in [(".", host), ("..", host.parent)] + sorted((c.name, c) for c in host.iterdir()):
                st = p.stat()
                raw = name.encode()
                out += _id(b"DENT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
        out += _id(b"DONE", 0, 0, 0, 0)
        self.stream.write(bytes(out))

    def send(self, arg: str) -> None:
        path, _, mode = arg.rpartition(",")
        if not path:
            path, mode = arg, "33188"
        host = self._host(path)
        faults = self.dev.faults
        drop_at = faults.drop_push_after_bytes if faults.pushes_dropped < faults.drop_push_times else None
        tmp = None
        error: Optional[str] = None if host is not None else f"{path}: Read-only file system"
        received = 0
        try:
            if host is not None:
                host.parent.mkdir(parents=True, exist_ok=True)
                tmp = host.with_name(f".{host.name}.adbtmp")
                fh = open(tmp, "wb")
            while True:
                head = self.stream.read_exact(8)
                cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
                if cmd == b"DONE":
                    mtime = n
                    break
                if cmd != b"DATA":
                    error = f"expected DATA or DONE, got {cmd!r}"
                    break
                data = self.stream.read_exact(n)
                received += n
                if drop_at is not None and received >= drop_at:
                    faults.pushes_dropped += 1
                    self.stream.conn.drop()
                    raise OSError("connection dropped by fault injection")
                if faults.storage_quota_bytes is not None and received > faults.storage_quota_bytes:
                    error = f"{path}: No space left on device"
                if error is None and tmp is not None:
                    fh.write(data)
        finally:
            if tmp is not None:
                fh.close()
                if error is not None or self.stream.conn.closed.is_set():
                    tmp.unlink(missing_ok=True)
        if error is not None:
            self._fail(error)
            return
        os.replace(tmp, host)
        try:
            os.chmod(host, int(mode) & 0o7777)
            if mtime:
                os.utime(host, (mtime, mtime))
        except (ValueError, OSError):
            pass
        self.stream.write(_id(b"OKAY", 0))

    def recv(self, path: str) -> None:
        host = self._host(path)
        if self.dev.faults.fail_recv:
            self._fail(f"{path}: Permission denied")
            return
        if host is None or not host.is_file():
            self._fail(f"{path}: No such file or directory")
            return
        with open(host, "rb") as fh:
            while chunk := fh.read(SYNC_CHUNK):
                self.stream.write(_id(b"DATA", len(chunk)) + chunk)
        self.stream.write(_id(b"DONE", 0))
