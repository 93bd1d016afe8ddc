"""`python -m device bench|generate` with the native runner against the virtual arm64 phone: the
real aarch64 binary under qemu, real pushes, real prompts from text; ABI and storage faults."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from device.cli import main
from device.keys import ensure_key
from device.prompts import read_ids
from device.transport import AdbTcpTransport
from device.virtual import Faults, VirtualDevice


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


def device(tmp_path, key, **kw):
    return VirtualDevice(tmp_path / "device", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                         accept_new_keys=False, max_lifetime_s=600, **kw)


def bench(dev, key, pte, *extra):
    return main(["bench", "--device", dev.address, "--key", str(key), "--pte", str(pte), "--prompt-lengths", "12",
                 "40", "--decode-lengths", "4", "--reps", "2", "--warmup", "1", *extra])


def test_auto_runs_the_arm64_binary_with_real_text(tmp_path, key, runners, tiny_llama_delta, capsys):
    out, m = tiny_llama_delta
    with device(tmp_path, key) as dev:
        code = bench(dev, key, out / m["pte"], "--results-dir", str(tmp_path / "res"))
        pushed = next(dev.sandbox.host_path("/data/local/tmp/deltallm").glob("deltallm_runner-*")).read_bytes()
        ids = read_ids(next(dev.sandbox.host_path("/data/local/tmp/deltallm").glob("*/prompt_ids.bin")))
    assert code == 0, capsys.readouterr().err
    assert pushed == runners["arm64-v8a"].read_bytes()
    assert len(ids) == 40 and ids[0] == m["architecture"]["bos_id"] and len(set(ids)) > 15   # text, not noise
    rows = json.loads((tmp_path / "res" / "results.json").read_text())
    assert [r["prompt_tokens"] for r in rows] == [12, 40]
    for r in rows:
        assert r["runner"] == "native" and r["abi"] == "arm64-v8a"
        assert r["binary_sha256"] == hashlib.sha256(pushed).hexdigest()
        assert 0 < r["prefill_s_c"] < 1 and 0 < r["decode_s_m"] < 1 and r["peak_rss_mb"] > 1
        assert len(r["decode_tps"]) == 2 and min(r["decode_tps"]) > 0
    assert "runner: native" in capsys.readouterr().out       # the markdown table's constant columns


def test_python_and_native_runners_agree_on_sparsity(tmp_path, key, runners, tiny_llama_delta, capsys,
                                                      monkeypatch):
    """Same program, same pushed ids: the kernel counters give the same S_m/S_c in both runners."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    out, m = tiny_llama_delta
    rows = {}
    for runner in ("native", "python"):
        with device(tmp_path / runner, key) as dev:
            assert bench(dev, key, out / m["pte"], "--runner", runner, "--format", "json") == 0
        rows[runner] = json.loads(capsys.readouterr().out)
    for a, b in zip(rows["native"], rows["python"]):
        assert (a["runner"], b["runner"]) == ("native", "python")
        assert a["prefill_s_c"] == pytest.approx(b["prefill_s_c"], abs=1e-12)
        assert a["decode_s_m"] == pytest.approx(b["decode_s_m"], abs=1e-12)


def test_generate_on_the_phone(tmp_path, key, runners, tiny_llama_fp32, capsys):
    out, m = tiny_llama_fp32
    with device(tmp_path, key) as dev:
        code = main(["generate", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--prompt", "The clock struck", "--max-new-tokens", "6", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runner"] == "native" and result["abi"] == "arm64-v8a"
    assert 1 <= len(result["tokens"]) <= 6 and isinstance(result["text"], str) and result["ttft_ms"] > 0


def test_x86_64_device_runs_its_own_binary(tmp_path, key, runners, tiny_llama_fp32, capsys):
    out, m = tiny_llama_fp32
    with device(tmp_path, key, abi="x86_64") as dev:
        code = bench(dev, key, out / m["pte"], "--runner", "native", "--format", "json")
    assert code == 0
    assert {r["abi"] for r in json.loads(capsys.readouterr().out)} == {"x86_64"}


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_wrong_abi_binary_is_refused_before_pushing(tmp_path, key, runners, tiny_llama_fp32, capsys):
    out, m = tiny_llama_fp32
    with device(tmp_path, key) as dev:
        code = bench(dev, key, out / m["pte"], "--runner", "native", "--runner-binary", str(runners["x86_64"]),
                     "--results-dir", str(tmp_path / "res"))
        pushed = list(dev.sandbox.host_path("/data/local/tmp").rglob("*.pte"))
    assert code == 3
    assert "is built for x86_64, but the device's ABI is arm64-v8a" in _error(capsys)
    assert not pushed and not (tmp_path / "res").exists()


def test_virtual_phone_refuses_a_foreign_executable(tmp_path, key, runners):
    """As an arm64 phone's shell does: an x86-64 ELF is not executable (126); aarch64 runs."""
    with device(tmp_path, key) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        for name, abi in (("x86", "x86_64"), ("arm", "arm64-v8a")):
            t.push(runners[abi], f"/data/local/tmp/{name}")
            t.check(["chmod", "755", f"/data/local/tmp/{name}"], "chmod")
        bad = t.shell("/data/local/tmp/x86 --version")
        good = t.shell("cd /data/local/tmp && taskset -c 0 /data/local/tmp/arm --version")
        machine = t.shell("uname -m").output.strip()
        t.close()
    assert bad.exit_code == 126 and "not executable: 64-bit ELF file" in bad.output
    assert good.exit_code == 0 and good.output.startswith("deltallm_runner arm64-v8a")
    assert machine == "aarch64"


def test_not_enough_storage_fails_before_pushing(tmp_path, key, runners, tiny_llama_fp32, capsys):
    out, m = tiny_llama_fp32
    with device(tmp_path, key, faults=Faults(storage_quota_bytes=200_000)) as dev:
        code = bench(dev, key, out / m["pte"], "--runner", "native")
        pushed = [p for p in dev.sandbox.host_path("/data/local/tmp").rglob("*") if p.is_file()]
    assert code == 3
    err = _error(capsys)
    assert "not enough free storage in /data/local/tmp/deltallm" in err and "0.2 MB free" in err
    assert not pushed


def test_program_needing_a_missing_operator_is_named(tmp_path, key, runners, tiny_llama_fp32, capsys):
    from tests.test_native_runner import _tanh_program

    out, m = tiny_llama_fp32
    prog = tmp_path / "prog"
    prog.mkdir()
    pte = _tanh_program(prog / "tanh.pte")
    (prog / "tanh.json").write_text(json.dumps({"format": "deltallm-export/1", "architecture": {"vocab_size": 512}}))
    with device(tmp_path, key) as dev:
        code = bench(dev, key, pte, "--runner", "native", "--random-prompt", "--results-dir", str(tmp_path / "res"))
    assert code == 3
    err = _error(capsys)
    assert "native runner exited with 2" in err and "aten::tanh.out" in err
    assert not (tmp_path / "res").exists()


def test_native_without_a_build_for_the_abi_says_how(tmp_path, key, tiny_llama_fp32, capsys, monkeypatch):
    monkeypatch.setenv("DELTALLM_CACHE", str(tmp_path / "empty-cache"))
    out, m = tiny_llama_fp32
    with device(tmp_path, key) as dev:
        code = bench(dev, key, out / m["pte"], "--runner", "native")
    assert code == 3 and "python -m device build-runner --abi arm64-v8a" in _error(capsys)


def _corrupt(out, m, tmp_path):
    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / m["pte"]).write_bytes((out / m["pte"]).read_bytes()[:5000])
    for name in (m["pte"].replace(".pte", ".json"), "tokenizer.json"):
        (prog / name).write_bytes((out / name).read_bytes())
    return prog / m["pte"]


def _wrong_tokenizer(out, m, tmp_path):
    """A user's mistake: the program beside another model's (larger) tokenizer."""
    from tests.native_helpers import big_tokenizer

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / m["pte"]).write_bytes((out / m["pte"]).read_bytes())
    (prog / m["pte"].replace(".pte", ".json")).write_bytes((out / m["pte"].replace(".pte", ".json")).read_bytes())
    big_tokenizer().save(str(prog / "tokenizer.json"))
    return prog / m["pte"]


@pytest.mark.parametrize("case,extra,message", [
    ("corrupt", [], "--pte: {pte} (5000 bytes) is not the program its manifest"),
    ("past_context", ["--prompt-lengths", "120", "--decode-lengths", "16"],
     "--decode-lengths: prompt 120 + decode 16 tokens exceed the program's max context 128"),
    ("wrong_tokenizer", [], "tokens, more than the program's vocabulary of 512"),
])
def test_bad_input_through_the_cli_records_nothing(tmp_path, key, runners, tiny_llama_fp32, capsys,
                                                   case, extra, message):
    """Found on the host before anything is pushed (the runner's own checks: test_native_runner)."""
    out, m = tiny_llama_fp32
    pte = {"corrupt": _corrupt, "wrong_tokenizer": _wrong_tokenizer}.get(case, lambda o, mm, t: o / mm["pte"])(
        out, m, tmp_path)
    with device(tmp_path, key) as dev:
        code = bench(dev, key, pte, "--runner", "native", "--results-dir", str(tmp_path / "res"), *extra)
        pushed = [p for p in dev.sandbox.host_path("/data/local/tmp").rglob("*") if p.is_file()]
    assert code == 2
    err = _error(capsys)
    assert message.format(pte=pte) in err, err
    assert not pushed and not (tmp_path / "res").exists()
