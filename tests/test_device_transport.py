"""The virtual ADB device driven by adb-shell (our transport) and by Debian's real adb client."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from device.errors import AuthRefused, DeviceError, DeviceTimeout
from device.keys import ensure_key
from device.push import push_verified
from device.transport import AdbTcpTransport
from device.virtual import Faults, VirtualDevice

NASTY = "'; rm -rf /; echo '"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    path = ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return path


def make_device(tmp_path, key, **kw):
    pub = Path(str(key) + ".pub").read_bytes()
    return VirtualDevice(tmp_path / "device", authorized_keys=[pub], accept_new_keys=False, max_lifetime_s=300, **kw)


def test_shell_exit_codes_and_literal_arguments(tmp_path, key):
    with make_device(tmp_path, key) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        assert t.shell("echo hi; exit 7").exit_code == 7
        prompt = f"{NASTY} a  b\nline 2 $HOME `id` \"q\""
        r = t.shell(["printf", "%s", prompt])
        assert (r.exit_code, r.output) == (0, prompt)
        assert not list((tmp_path / "device").glob("**/line*"))
        t.close()


def test_push_pull_stat_with_nasty_path(tmp_path, key):
    local = tmp_path / "model.pte"
    local.write_bytes(os.urandom(300_000))
    remote = f"/data/local/tmp/dir {NASTY}\nx/model file.pte"
    with make_device(tmp_path, key) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        assert push_verified(t, local, remote) is True
        assert push_verified(t, local, remote) is False            # unchanged: skipped
        mode, size, _ = t.stat(remote)
        assert size == 300_000
        assert t.stat("/data/local/tmp/missing") is None
        back = tmp_path / "back.pte"
        t.pull(remote, back)
        assert back.read_bytes() == local.read_bytes()
        host_copy = dev.sandbox.host_path(remote)
        assert host_copy.read_bytes() == local.read_bytes() and str(tmp_path) in str(host_copy)
        t.close()


def test_failed_pull_leaves_no_local_file(tmp_path, key):
    with make_device(tmp_path, key, faults=Faults(fail_recv=True)) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        t.check(["sh", "-c", "echo x > /data/local/tmp/r.json"], "write")
        with pytest.raises(DeviceError, match="pull /data/local/tmp/r.json"):
            t.pull("/data/local/tmp/r.json", tmp_path / "r.json")
        assert not list(tmp_path.glob("r.json*")) and not list(tmp_path.glob(".r.json*"))


def test_key_refused_is_a_clear_error(tmp_path, key):
    with make_device(tmp_path, key, faults=Faults(refuse_keys=True)) as dev:
        t0 = time.monotonic()
        with pytest.raises(AuthRefused, match="did not accept our ADB key"):
            AdbTcpTransport(dev.address, key_path=key, auth_timeout_s=1.0)
        assert time.monotonic() - t0 < 10


def test_unknown_key_accepted_when_device_allows(tmp_path, key):
    dev = VirtualDevice(tmp_path / "d", accept_new_keys=True, max_lifetime_s=60).start()
    try:
        AdbTcpTransport(dev.address, key_path=key, auth_timeout_s=2.0).close()
    finally:
        dev.stop()


def test_hanging_command_times_out(tmp_path, key):
    with make_device(tmp_path, key, faults=Faults(hang_commands=("sleep-forever",))) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no answer within 1.5 s"):
            t.shell("run sleep-forever", timeout_s=1.5)
        assert time.monotonic() - t0 < 10


def test_dropped_push_is_retried_and_verified(tmp_path, key, capsys):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(600_000))
    with make_device(tmp_path, key, faults=Faults(drop_push_after_bytes=200_000, drop_push_times=1)) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        assert push_verified(t, local, "/data/local/tmp/big.bin", retries=3) is True
        assert dev.faults.pushes_dropped == 1
        assert dev.sandbox.host_path("/data/local/tmp/big.bin").read_bytes() == local.read_bytes()
        assert "attempt 1/3" in capsys.readouterr().err


def test_push_that_keeps_dropping_fails_after_bounded_retries(tmp_path, key):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(400_000))
    with make_device(tmp_path, key, faults=Faults(drop_push_after_bytes=100_000, drop_push_times=99)) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        with pytest.raises(DeviceError, match="failed after 2 attempts"):
            push_verified(t, local, "/data/local/tmp/big.bin", retries=2)
        assert dev.faults.pushes_dropped == 2
        assert not dev.sandbox.host_path("/data/local/tmp/big.bin").exists()


def test_storage_full_fails_the_push(tmp_path, key):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(300_000))
    with make_device(tmp_path, key, faults=Faults(storage_quota_bytes=100_000)) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        with pytest.raises(DeviceError, match="No space left on device"):
            t.push(local, "/data/local/tmp/big.bin")
        assert not dev.sandbox.host_path("/data/local/tmp/big.bin").exists()


# --------------------------------------------------------------------------- Debian's adb

def _free_port() -> int:
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not 5555 <= port <= 5585 and port != 5037:
            return port


def test_debian_adb_client_push_pull_shell(tmp_path):
    adb = shutil.which("adb")
    assert adb, "Debian's adb is needed (install.sh installs it: apt-get install adb)"
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(_free_port())}

    def run(*args, timeout=30):
        return subprocess.run([adb, *args], env=env, capture_output=True, text=True, timeout=timeout)

    dev = VirtualDevice(tmp_path / "device", accept_new_keys=True, max_lifetime_s=300).start()
    try:
        run("connect", dev.address)
        deadline = time.monotonic() + 20
        while "\tdevice" not in run("devices").stdout and time.monotonic() < deadline:
            time.sleep(0.3)
        assert f"{dev.address}\tdevice" in run("devices").stdout
        r = run("-s", dev.address, "shell", "echo out; echo err >&2; exit 5")
        assert r.returncode == 5 and "out" in r.stdout and "err" in r.stderr
        local = tmp_path / "payload.bin"
        local.write_bytes(os.urandom(2_500_000))
        remote = "/data/local/tmp/sub dir/payload.bin"
        r = run("-s", dev.address, "push", str(local), remote)
        assert r.returncode == 0, r.stderr
        assert dev.sandbox.host_path(remote).read_bytes() == local.read_bytes()
        back = tmp_path / "back.bin"
        r = run("-s", dev.address, "pull", remote, str(back))
        assert r.returncode == 0, r.stderr
        assert back.read_bytes() == local.read_bytes()
        r = run("-s", dev.address, "shell", "ls", "'/data/local/tmp/sub dir'")
        assert "payload.bin" in r.stdout
    finally:
        run("kill-server")
        dev.stop()


def test_usb_without_its_dependency_says_how_to_install():
    import importlib.util

    from device.transport import usb_transport

    if importlib.util.find_spec("usb1") is not None:
        pytest.skip("libusb1 is installed here; the hint only shows without it")
    with pytest.raises(DeviceError, match=r'pip install "deltallm-et\[usb\]"'):
        usb_transport()
