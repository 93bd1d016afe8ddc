"""ADB wire protocol pieces shared by the virtual device (and its tests).

A packet is a 24-byte little-endian header (command, arg0, arg1, data length, data checksum,
command ^ 0xffffffff) followed by the data. The checksum is the byte sum of the data (adb-shell
checks it; Debian's adb 29 sends 0 and ignores it).
"""
from __future__ import annotations

import base64
import hashlib
import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<6I")
A_VERSION = 0x01000001
MAX_PAYLOAD = 1024 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (_cmd(c) for c in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
NAMES = {CNXN: "CNXN", AUTH: "AUTH", OPEN: "OPEN", OKAY: "OKAY", CLSE: "CLSE", WRTE: "WRTE"}


class ProtocolError(Exception):
    pass


@dataclass
class Packet:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(self.command, self.arg0, self.arg1, len(self.data), sum(self.data) & 0xFFFFFFFF,
                           self.command ^ 0xFFFFFFFF) + self.data

    @property
    def name(self) -> str:
        return NAMES.get(self.command, hex(self.command))


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket, max_payload: int = MAX_PAYLOAD) -> Packet:
    command, arg0, arg1, length, _checksum, magic = HEADER.unpack(_read_exact(sock, HEADER.size))
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic for command {command:#x}")
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds {max_payload}")
    return Packet(command, arg0, arg1, _read_exact(sock, length) if length else b"")


# ----------------------------------------------------------------------------- RSA (adb keys)

_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")
_PUBKEY = struct.Struct("<II256s256sI")   # words, n0inv, modulus (LE), rr (LE), exponent


def parse_adb_public_key(blob: bytes):
    """An adb public key ('<base64> user@host') -> (modulus, exponent)."""
    text = blob.split(b"\0", 1)[0].strip().split(b" ", 1)[0]
    raw = base64.b64decode(text)
    if len(raw) != _PUBKEY.size:
        raise ProtocolError(f"adb public key of {len(raw)} bytes, expected {_PUBKEY.size}")
    words, _n0inv, modulus, _rr, exponent = _PUBKEY.unpack(raw)
    if words != 64:
        raise ProtocolError("only 2048-bit adb keys are supported")
    return int.from_bytes(modulus, "little"), exponent


def verify_token_signature(token: bytes, signature: bytes, modulus: int, exponent: int) -> bool:
    """adb signs the 20-byte token as a SHA-1 digest with PKCS#1 v1.5: check it."""
    k = (modulus.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    em = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(k, "big")
    t = _SHA1_DIGEST_INFO + token
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return em == expected


def key_fingerprint(blob: bytes) -> str:
    return hashlib.sha256(blob.split(b"\0", 1)[0].strip().split(b" ", 1)[0]).hexdigest()[:16]
