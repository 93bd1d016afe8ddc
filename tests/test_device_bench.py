"""`python -m device bench` against the virtual device: a real .pte, real runtime, real counters."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from device.cli import main
from device.keys import ensure_key
from device.virtual import Faults, VirtualDevice

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture(autouse=True)
def device_pythonpath(monkeypatch):
    # The virtual device runs the pushed runner with the host's Python and our package.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def device(tmp_path, key, **kw):
    return VirtualDevice(tmp_path / "device", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                         accept_new_keys=False, max_lifetime_s=600, **kw)


def bench_args(dev, key, pte, *extra):
    return ["bench", "--device", dev.address, "--key", str(key), "--pte", str(pte), "--prompt-lengths", "12", "40",
            "--decode-lengths", "6", "--reps", "2", "--warmup", "1", "--runner", "python", *extra]


def test_bench_delta_program_fills_every_field(tmp_path, key, tiny_llama_delta, capsys):
    out, m = tiny_llama_delta
    with device(tmp_path, key) as dev:
        code = main(bench_args(dev, key, out / m["pte"], "--results-dir", str(tmp_path / "res")))
        assert code == 0
        assert next(dev.sandbox.host_path("/data/local/tmp/deltallm").glob(f"*/{m['pte']}")).read_bytes() == \
            (out / m["pte"]).read_bytes()
    stdout = capsys.readouterr().out
    assert "| prompt_tokens | decode_tokens |" in stdout and "±" in stdout
    rows = json.loads((tmp_path / "res" / "results.json").read_text())
    assert [r["prompt_tokens"] for r in rows] == [12, 40]
    for r in rows:
        for k, v in r.items():
            assert v is not None, k
        assert len(r["ttft_ms"]) == 2 and all(x > 0 for x in r["decode_tps"])
        assert 0 < r["prefill_s_c"] <= r["prefill_s_m"] < 1 and 0 < r["decode_s_c"] < 1
        assert len(r["sparsity_layers"]) == 4                 # 2 layers x (prefill, decode)
        assert r["attention"].startswith("delta") and r["manifest"]["attention"]["theta"] == 0.3
        assert r["device_info"]["model"] == "VirtualDevice" and r["load_ms"] > 0
    for fmt in ("md", "csv", "jsonl"):
        assert (tmp_path / "res" / f"results.{fmt}").stat().st_size > 0
    assert main(["report", str(tmp_path / "res" / "results.json"), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("device,model,quantization")


def test_dense_program_has_no_sparsity(tmp_path, key, tiny_llama_fp32, capsys):
    out, m = tiny_llama_fp32
    with device(tmp_path, key) as dev:
        assert main(bench_args(dev, key, out / m["pte"], "--format", "json")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["prefill_s_c"] is None and r["attention"] == "dense" for r in rows)


def _fake_python(dev, body: str) -> str:
    script = dev.sandbox.root / "system" / "bin" / "fakepython"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return "fakepython"


@pytest.mark.parametrize("case,message", [
    ("crash", "runner exited with 139"),
    ("missing", "is missing"),
    ("malformed", "is malformed"),
])
def test_runner_faults_fail_clearly_and_record_nothing(tmp_path, key, tiny_llama_fp32, capsys, case, message):
    out, m = tiny_llama_fp32
    faults = Faults(crash_programs=("python3",)) if case == "crash" else Faults()
    with device(tmp_path, key, faults=faults) as dev:
        extra = ["--results-dir", str(tmp_path / "res")]
        if case == "missing":
            extra += ["--python", _fake_python(dev, "exit 0\n")]
        elif case == "malformed":
            extra += ["--python", _fake_python(dev, 'while [ "$1" != "--out" ]; do shift; done; echo "{not json" > "$2"\n')]
        code = main(bench_args(dev, key, out / m["pte"], *extra))
    err = capsys.readouterr().err
    assert code == 3
    assert f"error: {dev.address}: " in err and message in err
    assert not (tmp_path / "res").exists()


def test_thermal_gate_waits_for_the_device_to_cool(tmp_path, key, tiny_llama_fp32, capsys):
    import threading

    out, m = tiny_llama_fp32
    with device(tmp_path, key) as dev:
        dev.sandbox.set_temperature(0, 70.0)
        cool = threading.Timer(3.0, dev.sandbox.set_temperature, args=(0, 38.0))
        cool.start()
        code = main(["bench", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--prompt-lengths", "8", "--decode-lengths", "2", "--reps", "1", "--thermal-limit-c", "45",
                     "--runner", "python",
                     "--format", "json"])
        cool.cancel()
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["thermal_c_before"] == 38.0
    assert row["cpufreq_before"]["cpu0"] == 1800000 and row["device_info"]["max_freq_khz"][0] == 2400000


def test_android_benchmark_mode_protocol(tmp_path, key, tiny_llama_delta, capsys):
    """The app's protocol (am start + extras, result JSON + .done marker in its external files
    directory), against the virtual device's `am`, which emulates the app's benchmark mode."""
    from device import android_protocol as ap

    out, m = tiny_llama_delta
    with device(tmp_path, key) as dev:
        code = main(["bench", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--runner", "android", "--prompt-lengths", "10", "--decode-lengths", "3", "--reps", "1",
                     "--format", "json"])
        files = dev.sandbox.host_path(ap.FILES_DIR + "/bench")
        assert code == 0
        assert len(list(files.glob("*.json"))) == 1 and len(list(files.glob("*.done"))) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["prefill_s_c"] is not None and row["decode_tps"][0] > 0


def test_plot_writes_pngs(tmp_path, key, tiny_llama_delta, capsys):
    out, m = tiny_llama_delta
    with device(tmp_path, key) as dev:
        assert main(bench_args(dev, key, out / m["pte"], "--results-dir", str(tmp_path / "res"))) == 0
    assert main(["plot", str(tmp_path / "res" / "results.json"), "--out-dir", str(tmp_path / "png")]) == 0
    for name in ("latency_vs_prompt.png", "sparsity_per_layer.png"):
        data = (tmp_path / "png" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_each_program_has_its_own_folder_and_a_stale_runner_is_stopped(tmp_path, key, tiny_llama_fp32,
                                                                          tiny_llama_delta, capsys):
    """Two programs of the same file name land in two folders (by sha256), each with its own
    manifest and tokenizer; a runner left running by a killed host command (recorded in the pid
    file) is stopped by the next run; no pid file or partial push is left behind."""
    import subprocess
    import time

    with device(tmp_path, key) as dev:
        work = dev.sandbox.host_path("/data/local/tmp/deltallm")
        work.mkdir(parents=True)
        stale = work / "stale_runner"
        stale.write_text("#!/bin/sh\nsleep 300\n")
        stale.chmod(0o755)
        sleeper = subprocess.Popen([str(stale)], stdout=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.2)
        (work / "runner.pid").write_text(f"{sleeper.pid}\n")
        for out, m in (tiny_llama_fp32, tiny_llama_delta):
            assert main(bench_args(dev, key, out / m["pte"], "--format", "json")) == 0
        assert sleeper.wait(10) is not None                     # stopped by the first run
        folders = sorted(p for p in work.iterdir() if p.is_dir())
        names = [sorted(f.name for f in d.iterdir() if not f.name.startswith("result_")) for d in folders]
        manifests = [json.loads((d / "tiny_llama.json").read_text())["attention"]["kind"] for d in folders]
        leftovers = [p.name for p in work.rglob("*") if p.name.endswith(".part") or p.name == "runner.pid"]
    capsys.readouterr()
    assert len(folders) == 2 and sorted(manifests) == ["delta", "dense"]
    assert names == [["prompt_ids.bin", "tiny_llama.json", "tiny_llama.pte", "tokenizer.json"]] * 2
    assert all(len(d.name) == 16 for d in folders) and leftovers == []
