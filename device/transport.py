"""Device transports: a small interface, and ADB over TCP through adb-shell.

Every call takes a timeout in seconds (`timeout_s`). Every argument that reaches the device
shell is quoted (`quote_args`), so paths and prompts with spaces, quotes, `$`, `;` or newlines
arrive literally. adb-shell's legacy shell service has no exit status: we append a sentinel.
"""
from __future__ import annotations

import os
import secrets
import shlex
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from .errors import AuthRefused, DeviceError, DeviceTimeout, StorageFull

Command = Union[str, Sequence[str]]
Progress = Optional[Callable[[int, int], None]]   # (bytes done, bytes total)


@dataclass
class ShellResult:
    exit_code: int
    output: str


def quote_args(command: Command) -> str:
    """A list of arguments becomes one shell-quoted string; a string is taken as written."""
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(a)) for a in command)


class Transport(ABC):
    name: str

    @abstractmethod
    def shell(self, command: Command, timeout_s: float = 60.0) -> ShellResult: ...

    @abstractmethod
    def push(self, local: Path, remote: str, timeout_s: float = 300.0, progress: Progress = None) -> None: ...

    @abstractmethod
    def pull(self, remote: str, local: Path, timeout_s: float = 300.0) -> None: ...

    @abstractmethod
    def stat(self, remote: str, timeout_s: float = 30.0) -> Optional[tuple]: ...

    @abstractmethod
    def close(self) -> None: ...

    def open_shell(self, command: Command, timeout_s: float = 60.0):
        """A command with its stdin open (device/shell_stream.py), for a persistent runner."""
        raise DeviceError(self.name, "shell stream", "this transport has no interactive shell; use ADB over TCP")

    def check(self, command: Command, step: str, timeout_s: float = 60.0) -> str:
        """Run a command; a non-zero exit is a DeviceError naming `step`."""
        r = self.shell(command, timeout_s)
        if r.exit_code != 0:
            tail = r.output.strip().splitlines()[-3:]
            raise DeviceError(self.name, step, f"exit code {r.exit_code}: {' | '.join(tail)}")
        return r.output


def eof_aware_tcp_transport(host: str, port: int):
    """adb-shell's TCP transport, except that a closed socket is an error at once (adb-shell
    loops on empty reads until its read timeout). Defined lazily: adb-shell is imported on use."""
    from adb_shell.transport.tcp_transport import TcpTransport

    class EofAwareTcpTransport(TcpTransport):
        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionError(f"{self._host}:{self._port} closed the connection")
            return data

    return EofAwareTcpTransport(host, port)


class AdbTcpTransport(Transport):
    """ADB over TCP (`host:port`), e.g. a phone in `adb tcpip` mode or the virtual device."""

    def __init__(self, address: str, key_path: Optional[Path] = None, connect_timeout_s: float = 10.0,
                 auth_timeout_s: float = 10.0):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise DeviceError(address, "connect", "expected host:port")
        self.name, self.host, self.port = address, host, int(port)
        self.key_path, self.connect_timeout_s, self.auth_timeout_s = key_path, connect_timeout_s, auth_timeout_s
        self._dev = None
        self.connect()

    def connect(self) -> None:
        from adb_shell.adb_device import AdbDevice
        from adb_shell.exceptions import DeviceAuthError, TcpTimeoutException

        from .keys import load_signer

        self.close()
        dev = AdbDevice(eof_aware_tcp_transport(self.host, self.port), default_transport_timeout_s=self.connect_timeout_s)
        try:
            dev.connect(rsa_keys=[load_signer(self.key_path)], transport_timeout_s=self.connect_timeout_s,
                        auth_timeout_s=self.auth_timeout_s)
        except (TcpTimeoutException, DeviceAuthError) as e:
            dev.close()
            raise AuthRefused(self.name, "connect",
                              "the device did not accept our ADB key within "
                              f"{self.auth_timeout_s:g} s: confirm the 'Allow debugging' prompt on the device, "
                              "or add the key's .pub to its authorized keys") from e
        except (OSError, Exception) as e:  # noqa: BLE001 - socket errors and adb-shell's own
            dev.close()
            raise DeviceError(self.name, "connect", f"{type(e).__name__}: {e}") from e
        self._dev = dev

    def _device(self):
        if self._dev is None or not self._dev.available:
            self.connect()
        return self._dev

    def shell(self, command: Command, timeout_s: float = 60.0) -> ShellResult:
        from adb_shell.exceptions import AdbTimeoutError, TcpTimeoutException

        marker = f"__DLM_RC_{secrets.token_hex(4)}="
        wrapped = f"( {quote_args(command)}\n)\nprintf '\\n{marker}%d\\n' $?"
        try:
            out = self._device().shell(wrapped, timeout_s=timeout_s, read_timeout_s=timeout_s,
                                       transport_timeout_s=timeout_s)
        except (AdbTimeoutError, TcpTimeoutException) as e:
            self.close()
            raise DeviceTimeout(self.name, "shell", f"no answer within {timeout_s:g} s: {quote_args(command)[:80]}") from e
        except Exception as e:  # noqa: BLE001
            self.close()
            raise DeviceError(self.name, "shell", f"{type(e).__name__}: {e}") from e
        head, sep, tail = out.rpartition(marker)
        if not sep:
            raise DeviceError(self.name, "shell", "the command ended without an exit status (killed?)")
        code = int(tail.strip().splitlines()[0]) if tail.strip() else 255
        return ShellResult(code, head[:-1] if head.endswith("\n") else head)

    def open_shell(self, command: Command, timeout_s: float = 60.0):
        from .shell_stream import AdbShellStream

        dev = self._device()
        try:
            sock = dev._io_manager._transport._connection   # to wait for output without holding adb-shell's lock
            return AdbShellStream(self.name, dev, sock, quote_args(command), timeout_s)
        except Exception as e:  # noqa: BLE001
            self.close()
            raise DeviceError(self.name, "shell stream", f"{type(e).__name__}: {e} (does the device support "
                                                         "the shell v2 protocol, Android 7 or later?)") from e

    def push(self, local: Path, remote: str, timeout_s: float = 300.0, progress: Progress = None) -> None:
        cb = (lambda _path, done, total: progress(done, total)) if progress else None
        try:
            self._device().push(str(local), remote, progress_callback=cb, transport_timeout_s=timeout_s,
                                read_timeout_s=timeout_s)
        except Exception as e:  # noqa: BLE001 - adb-shell raises many kinds
            self.close()
            # adb-shell carries the device's FAIL text as bytes: show it as text.
            text = " ".join(bytes(a).decode("utf-8", "replace") if isinstance(a, (bytes, bytearray)) else str(a)
                            for a in e.args) or type(e).__name__
            cls = StorageFull if "No space left on device" in text else DeviceError
            raise cls(self.name, f"push {remote}", f"{type(e).__name__}: {text}") from e

    def pull(self, remote: str, local: Path, timeout_s: float = 300.0) -> None:
        """Pull into a temp file and rename: a failed pull leaves no local file behind."""
        local = Path(local)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            self._device().pull(remote, tmp, transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
            os.replace(tmp, local)
        except Exception as e:  # noqa: BLE001
            Path(tmp).unlink(missing_ok=True)
            self.close()
            raise DeviceError(self.name, f"pull {remote}", f"{type(e).__name__}: {e}") from e

    def stat(self, remote: str, timeout_s: float = 30.0) -> Optional[tuple]:
        try:
            mode, size, mtime = self._device().stat(remote, transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
        except Exception as e:  # noqa: BLE001
            self.close()
            raise DeviceError(self.name, f"stat {remote}", f"{type(e).__name__}: {e}") from e
        return None if (mode, size, mtime) == (0, 0, 0) else (mode, size, mtime)

    def close(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            except Exception:  # noqa: BLE001
                pass
            self._dev = None


def usb_transport(serial: Optional[str] = None, key_path: Optional[Path] = None, timeout_s: float = 10.0):
    """ADB over USB (optional extra). Raises a DeviceError that says how to install it."""
    from adb_shell.exceptions import InvalidTransportError

    try:
        from adb_shell.adb_device import AdbDeviceUsb

        dev = AdbDeviceUsb(serial=serial, default_transport_timeout_s=timeout_s)
    except (ImportError, InvalidTransportError) as e:
        raise DeviceError(serial or "usb", "connect",
                          'USB support needs libusb1: pip install "deltallm-et[usb]" '
                          "(or use TCP: adb tcpip 5555, then --device IP:5555)") from e
    from .keys import load_signer

    try:
        dev.connect(rsa_keys=[load_signer(key_path)], auth_timeout_s=timeout_s)
    except Exception as e:  # noqa: BLE001
        raise DeviceError(serial or "usb", "connect", f"{type(e).__name__}: {e}") from e
    return dev
