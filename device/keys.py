"""The host's ADB RSA key: reuse ~/.android/adbkey (as adb does), or create it with 0600."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_key_path() -> Path:
    return Path(os.environ.get("ADB_VENDOR_KEYS_HOME", Path.home() / ".android")) / "adbkey"


def ensure_key(path: Optional[Path] = None) -> Path:
    """Return the private key path, generating key + .pub (private key mode 0600) if missing."""
    path = Path(path or default_key_path())
    if path.is_file() and Path(str(path) + ".pub").is_file():
        return path
    from adb_shell.auth.keygen import keygen

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o077)
    try:
        keygen(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return path


def load_signer(path: Optional[Path] = None):
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    key = ensure_key(path)
    return PythonRSASigner(Path(str(key) + ".pub").read_text(), key.read_text())
