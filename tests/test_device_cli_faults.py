"""Every device fault through the CLI: one clear error naming the device and the step, a non-zero
exit code, and no partial local file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from device.cli import main
from device.keys import ensure_key
from device.virtual import Faults, VirtualDevice

NASTY = "'; rm -rf /; echo '"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


def run(tmp_path, key, faults, *argv, setup=None):
    pub = Path(str(key) + ".pub").read_bytes()
    with VirtualDevice(tmp_path / "dev", authorized_keys=[pub], accept_new_keys=False, faults=faults,
                       max_lifetime_s=120) as dev:
        if setup:
            setup(dev)
        code = main([argv[0], "--device", dev.address, "--key", str(key), "--auth-timeout-s", "1", *argv[1:]])
        return code, dev.address


@pytest.mark.parametrize("name", ["refused", "recv_fail", "storage_full", "hang", "dropped_push"])
def test_fault_exit_code_and_message(tmp_path, key, capsys, name):
    local = tmp_path / "in.bin"
    local.write_bytes(os.urandom(300_000))
    pulled = tmp_path / "out.json"
    cases = {
        "refused": (Faults(refuse_keys=True), ["info"], 5, "connect: the device did not accept our ADB key"),
        "recv_fail": (Faults(fail_recv=True), ["pull", "/data/local/tmp/r.json", str(pulled)], 3,
                      "pull /data/local/tmp/r.json"),
        "storage_full": (Faults(storage_quota_bytes=1000), ["push", str(local), "/data/local/tmp/in.bin"], 3,
                         "No space left on device: in.bin needs 0.3 MB"),
        "hang": (Faults(hang_commands=("stuck",)), ["shell", "--timeout-s", "1", "--", "echo", "stuck"], 4,
                 "shell: no answer within 1 s"),
        "dropped_push": (Faults(drop_push_after_bytes=50_000, drop_push_times=99),
                         ["push", str(local), "/data/local/tmp/in.bin"], 3, "failed after 3 attempts"),
    }
    faults, argv, want_code, message = cases[name]
    setup = (lambda dev: dev.sandbox.host_path("/data/local/tmp/r.json").write_text("{}")) if name == "recv_fail" else None
    code, address = run(tmp_path, key, faults, *argv, setup=setup)
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == want_code
    assert len(err) == 1 and err[0].startswith(f"error: {address}: ") and message in err[0], err
    assert not pulled.exists() and not list(tmp_path.glob(".out.json*"))
    assert "bytearray" not in err[0] and (name != "storage_full" or "attempt" not in stderr)   # no retries
    assert list((tmp_path / "dev").rglob("in.bin*")) == []                     # no partial push left behind


def test_shell_passes_nasty_arguments_literally(tmp_path, key, capsys):
    code, _ = run(tmp_path, key, Faults(), "shell", "--", "printf", "%s", f"{NASTY} $HOME\nx")
    assert code == 0
    assert capsys.readouterr().out == f"{NASTY} $HOME\nx"
