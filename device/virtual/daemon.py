"""The virtual ADB device: CNXN / AUTH (real RSA signature checks) / OPEN / OKAY / WRTE / CLSE,
services shell: / shell,v2: (exit codes) / exec: / sync: (STAT LIST SEND RECV DATA DONE QUIT),
backed by a `Sandbox`. Binds 127.0.0.1 on an ephemeral port (never 5555-5585, which the adb
server adopts as emulators) and stops itself after `max_lifetime_s`.

Flow control follows adbd: one unacknowledged WRTE per stream, and every host WRTE is
acknowledged with OKAY. maxdata is the smaller of both sides.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..adb_protocol import (A_VERSION, AUTH, AUTH_RSAPUBLICKEY, AUTH_SIGNATURE, AUTH_TOKEN, CLSE, CNXN, MAX_PAYLOAD,
                            OKAY, OPEN, WRTE, Packet, ProtocolError, parse_adb_public_key, read_packet,
                            verify_token_signature)
from .sandbox import Sandbox
from .services import Stream, run_service

ADB_SERVER_SCAN = range(5555, 5586)


@dataclass
class Faults:
    """Faults the virtual device injects (for tests and for users' CI)."""

    refuse_keys: bool = False                     # accept no key, like a phone whose user says no
    drop_push_after_bytes: Optional[int] = None   # drop the connection once a SEND has received this much
    drop_push_times: int = 1                      # ... for this many pushes, then pushes succeed
    hang_commands: Tuple[str, ...] = ()           # shell commands containing one of these never finish
    crash_programs: Tuple[str, ...] = ()          # these programs die of SIGSEGV when a shell runs them
    fail_recv: bool = False                       # every RECV answers FAIL
    storage_quota_bytes: Optional[int] = None     # a SEND past this answers FAIL "No space left on device"
    pushes_dropped: int = field(default=0, init=False)


class VirtualDevice:
    def __init__(self, root: Path, *, serial: str = "virtual-0", require_auth: bool = True,
                 authorized_keys: List[bytes] = (), accept_new_keys: bool = True, faults: Optional[Faults] = None,
                 properties: Optional[Dict[str, str]] = None, max_payload: int = MAX_PAYLOAD,
                 max_lifetime_s: float = 3600.0, abi: str = "arm64-v8a"):
        self.sandbox = Sandbox(root, abi)
        self.serial = serial
        self.require_auth = require_auth
        self.accept_new_keys = accept_new_keys
        self.faults = faults or Faults()
        self.max_payload = max_payload
        self.max_lifetime_s = max_lifetime_s
        self.properties = {"ro.product.name": "virtual", "ro.product.model": "VirtualDevice",
                           "ro.product.device": "virtual", "ro.product.manufacturer": "deltallm",
                           "ro.product.cpu.abi": abi,
                           "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi" if abi == "arm64-v8a"
                           else "x86_64,x86", "ro.build.version.release": "14",
                           "ro.build.version.sdk": "34", "ro.hardware": "virtual", **(properties or {})}
        self._keys = [parse_adb_public_key(k) for k in authorized_keys]
        self._sock: Optional[socket.socket] = None
        self._threads: List[threading.Thread] = []
        self._conns: List["_Connection"] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._timer: Optional[threading.Timer] = None
        self.port = 0
        self._write_getprop()
        for i in range(os.cpu_count() or 1):
            self.sandbox.set_cpufreq(i, 1800000, 2400000)
        self.sandbox.set_temperature(0, 35.0)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "VirtualDevice":
        for _ in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] not in ADB_SERVER_SCAN:
                break
            s.close()
        s.listen(16)
        self._sock, self.port = s, s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"vdev-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._timer:
            self._timer.cancel()
        if self._sock:
            try:
                self._sock.close()
            except OSError:
                pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def __enter__(self) -> "VirtualDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stopped(self) -> threading.Event:
        return self._stopped

    # ------------------------------------------------------------------ internals
    def _write_getprop(self) -> None:
        script = self.sandbox.root / "system" / "bin" / "getprop"
        lines = "\n".join(f"  {k}) echo '{v}' ;;" for k, v in self.properties.items())
        listing = "\n".join(f"echo '[{k}]: [{v}]'" for k, v in self.properties.items())
        script.write_text(f"#!/bin/sh\nif [ $# -eq 0 ]; then\n{listing}\nexit 0\nfi\ncase \"$1\" in\n{lines}\n"
                          f"  *) echo '' ;;\nesac\n")
        script.chmod(0o755)
        df = self.sandbox.root / "system" / "bin" / "df"
        if self.faults.storage_quota_bytes is not None:   # what a nearly full phone's toybox df says
            kb = self.faults.storage_quota_bytes // 1024
            df.write_text("#!/bin/sh\necho 'Filesystem      1K-blocks    Used Available Use% Mounted on'\n"
                          f"echo '/dev/block/dm-5 {kb + 1000} 1000 {kb} 1% /data'\n")
            df.chmod(0o755)
        else:
            df.unlink(missing_ok=True)
        am = self.sandbox.root / "system" / "bin" / "am"
        am.write_text('#!/bin/sh\nexec python3 -m device.virtual.fake_am "$@"\n')
        am.chmod(0o755)

    def banner(self) -> bytes:
        props = ";".join(f"{k}={self.properties[k]}" for k in ("ro.product.name", "ro.product.model",
                                                                 "ro.product.device"))
        return f"device::{props};features=shell_v2,cmd\0".encode()

    def key_accepted(self, token: bytes, signature: bytes) -> bool:
        if self.faults.refuse_keys:
            return False
        return any(verify_token_signature(token, signature, n, e) for n, e in self._keys)

    def offer_key(self, blob: bytes) -> bool:
        if self.faults.refuse_keys or not self.accept_new_keys:
            return False
        try:
            self._keys.append(parse_adb_public_key(blob))
        except (ProtocolError, ValueError):
            return False
        return True

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=conn.run, name=f"vdev-conn-{self.port}", daemon=True).start()

    def forget(self, conn: "_Connection") -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)


class _Connection:
    def __init__(self, dev: VirtualDevice, sock: socket.socket):
        self.dev = dev
        self.sock = sock
        self.send_lock = threading.Lock()
        self.max_data = dev.max_payload
        self.streams: Dict[int, Stream] = {}
        self.next_id = 1
        self.token = b""
        self.online = False
        self.closed = threading.Event()

    def send(self, pkt: Packet) -> None:
        with self.send_lock:
            self.sock.sendall(pkt.encode())

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for s in list(self.streams.values()):
            s.abort()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.dev.forget(self)

    def _new_token(self) -> None:
        self.token = secrets.token_bytes(20)
        self.send(Packet(AUTH, AUTH_TOKEN, 0, self.token))

    def _online(self) -> None:
        self.online = True
        self.send(Packet(CNXN, A_VERSION, self.max_data, self.dev.banner()))

    def run(self) -> None:
        try:
            while not self.closed.is_set():
                self.handle(read_packet(self.sock, max(self.dev.max_payload, MAX_PAYLOAD)))
        except (ConnectionError, OSError, ProtocolError):
            pass
        finally:
            self.close()

    def handle(self, p: Packet) -> None:
        if p.command == CNXN:
            self.max_data = min(self.dev.max_payload, p.arg1 or MAX_PAYLOAD)
            if self.dev.require_auth:
                self._new_token()
            else:
                self._online()
        elif p.command == AUTH:
            if p.arg0 == AUTH_SIGNATURE:
                if self.dev.key_accepted(self.token, p.data):
                    self._online()
                else:
                    self._new_token()
            elif p.arg0 == AUTH_RSAPUBLICKEY and self.dev.offer_key(p.data):
                self._online()
            # an unaccepted public key gets no answer: the host times out, as with a phone
        elif not self.online:
            return
        elif p.command == OPEN:
            local = self.next_id
            self.next_id += 1
            stream = Stream(self, local, p.arg0)
            self.streams[local] = stream
            service = p.data.rstrip(b"\0").decode(errors="replace")
            self.send(Packet(OKAY, local, p.arg0))
            threading.Thread(target=run_service, args=(self.dev, stream, service), daemon=True).start()
        elif p.command == OKAY:
            s = self.streams.get(p.arg1)
            if s:
                s.acked()
        elif p.command == WRTE:
            s = self.streams.get(p.arg1)
            if s:
                s.received(p.data)
                self.send(Packet(OKAY, p.arg1, p.arg0))
        elif p.command == CLSE:
            s = self.streams.pop(p.arg1, None)
            if s:
                s.remote_closed()

    def drop(self) -> None:
        """Fault injection: the connection dies (as a cable pulled mid-transfer)."""
        self.close()

