"""Bad input to every device command, against a live virtual device: exit code 2, one error line
naming the option or file, and nothing pushed to the device or written locally; a bench that
fails late keeps the cells that finished."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device.cli import main
from device.keys import ensure_key
from device.virtual import Faults, VirtualDevice

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = "/data/local/tmp/deltallm"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture(autouse=True)
def device_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))     # the virtual device runs the Python runner with our package


def _program(tmp: Path, tiny) -> Path:
    """A private copy of the tiny program (its manifest and tokenizer beside it) that a case may spoil."""
    out, m = tiny
    d = tmp / "prog"
    shutil.copytree(out, d)
    return d / m["pte"]


def _spoil(kind: str, pte: Path, tmp: Path, big_tokenizer: Path) -> None:
    manifest, tok = pte.with_suffix(".json"), pte.parent / "tokenizer.json"
    if kind == "text_as_pte":
        pte.write_text("this is not a program\n" * 10)
    elif kind == "truncated_pte":
        pte.write_bytes(pte.read_bytes()[:6])
    elif kind == "other_program":            # a different program beside this manifest: its size differs
        pte.write_bytes(pte.read_bytes() + b"\0" * 64)
    elif kind == "corrupt_manifest":
        manifest.write_text('{"format": "deltallm-export/1", "pte"')
    elif kind == "foreign_manifest":
        manifest.write_text("{}")
    elif kind == "no_tokenizer":
        tok.unlink()
    elif kind == "wrong_tokenizer":
        shutil.copy(big_tokenizer, tok)
    elif kind == "short_prompt_file":
        (tmp / "short.txt").write_text("One line of text.\n")
    elif kind == "full_results_dir":
        (tmp / "res").mkdir()
        (tmp / "res" / "results.json").write_text("[]")
    elif kind == "bad_report":
        (tmp / "bad.json").write_text("{}")
    elif kind == "bad_report_row":
        (tmp / "row.json").write_text('[{"device": "x"}]')


# (command, spoil, extra arguments, error line starts with, and contains)
CASES = {
    "bench_missing_pte": ("bench", None, ["--pte", "{tmp}/none.pte"], "--pte", "does not exist"),
    "bench_pte_is_folder": ("bench", None, ["--pte", "{tmp}"], "--pte", "is not a file"),
    "bench_text_as_pte": ("bench", "text_as_pte", [], "--pte", "not an ExecuTorch program"),
    "bench_truncated_pte": ("bench", "truncated_pte", [], "--pte", "not an ExecuTorch program"),
    "bench_other_program": ("bench", "other_program", [], "--pte", "is not the program its manifest"),
    "bench_corrupt_manifest": ("bench", "corrupt_manifest", [], "{prog}/tiny_llama.json", "not a readable JSON"),
    "bench_foreign_manifest": ("bench", "foreign_manifest", [], "{prog}/tiny_llama.json", "not a manifest written"),
    "bench_no_tokenizer": ("bench", "no_tokenizer", [], "--pte", "no tokenizer.json beside"),
    "bench_wrong_tokenizer": ("bench", "wrong_tokenizer", [], "{prog}/tokenizer.json", "more than the program's"),
    "bench_prompt_0": ("bench", None, ["--prompt-lengths", "0"], "--prompt-lengths", "0 is out of range (1..128"),
    "bench_prompt_negative": ("bench", None, ["--prompt-lengths", "-5"], "--prompt-lengths", "-5 is out of range"),
    "bench_prompt_beyond_context": ("bench", None, ["--prompt-lengths", "129"], "--prompt-lengths", "max context is 128"),
    "bench_decode_negative": ("bench", None, ["--decode-lengths", "-1"], "--decode-lengths", "-1 is out of range"),
    "bench_prompt_plus_decode": ("bench", None, ["--prompt-lengths", "100", "--decode-lengths", "40"],
                                 "--decode-lengths", "prompt 100 + decode 40 tokens exceed"),
    "bench_reps_0": ("bench", None, ["--reps", "0"], "--reps", "0 is out of range (>= 1)"),
    "bench_warmup_negative": ("bench", None, ["--warmup", "-1"], "--warmup", "-1 is out of range"),
    "bench_threads_negative": ("bench", None, ["--threads", "-2"], "--threads", "-2 is out of range"),
    "bench_cpus_text": ("bench", None, ["--cpus", "abc"], "--cpus", "not a CPU list"),
    "bench_cpu_mask_text": ("bench", None, ["--cpu-mask", "zz"], "--cpu-mask", "not a hexadecimal CPU mask"),
    "bench_timeout_0": ("bench", None, ["--run-timeout-s", "0"], "--run-timeout-s", "must be > 0"),
    "bench_prompt_file_missing": ("bench", None, ["--prompt-file", "{tmp}/none.txt"], "--prompt-file", "none.txt"),
    "bench_prompt_file_short": ("bench", "short_prompt_file", ["--prompt-file", "{tmp}/short.txt"], "--prompt-file",
                                "fewer than the 40 asked"),
    "bench_prompt_file_and_random": ("bench", None, ["--prompt-file", "x.txt", "--random-prompt"], "--prompt-file",
                                     "exclude each other"),
    "bench_results_dir_unwritable": ("bench", None, ["--results-dir", "/proc/x"], "--results-dir", "cannot be written"),
    "bench_results_dir_full": ("bench", "full_results_dir", ["--results-dir", "{tmp}/res"], "--results-dir",
                               "is not empty (pass --overwrite"),
    "bench_runner_binary_missing": ("bench", None, ["--runner-binary", "{tmp}/none"], "--runner-binary",
                                    "does not exist"),
    "bench_device_no_port": ("bench", None, ["--device", "localhost"], "--device", "is not HOST:PORT"),
    "bench_device_bad_port": ("bench", None, ["--device", "127.0.0.1:99999"], "--device", "is not HOST:PORT"),
    "generate_missing_pte": ("generate", None, ["--pte", "{tmp}/none.pte"], "--pte", "does not exist"),
    "generate_text_as_pte": ("generate", "text_as_pte", [], "--pte", "not an ExecuTorch program"),
    "generate_max_new_0": ("generate", None, ["--max-new-tokens", "0"], "--max-new-tokens", "0 is out of range"),
    "generate_temperature": ("generate", None, ["--temperature", "-1"], "--temperature", "must be >= 0"),
    "generate_prompt_fills_context": ("generate", None, ["--prompt", "word " * 200, "--raw"], "--prompt",
                                      "fill the program's max context 128"),
    "generate_device_no_port": ("generate", None, ["--device", "localhost"], "--device", "is not HOST:PORT"),
    "chat_missing_pte": ("chat", None, ["--pte", "{tmp}/none.pte"], "--pte", "does not exist"),
    "chat_no_template": ("chat", None, [], "--pte", "carries no chat template"),
    "chat_max_new_0": ("chat", None, ["--max-new-tokens", "0"], "--max-new-tokens", "0 is out of range"),
    "chat_temperature": ("chat", None, ["--temperature", "-1"], "--temperature", "must be >= 0"),
    "chat_timeout_0": ("chat", None, ["--timeout-s", "0"], "--timeout-s", "must be > 0"),
    "chat_device_no_port": ("chat", None, ["--device", "localhost"], "--device", "is not HOST:PORT"),
    "push_missing_local": ("push", None, ["{tmp}/none.bin", f"{WORKDIR}/x"], "local", "does not exist"),
    "push_device_no_port": ("push", None, ["--device", "nohost", "{prog}/tiny_llama.pte", f"{WORKDIR}/x"], "--device",
                            "is not HOST:PORT"),
    "report_not_results": ("report", "bad_report", ["{tmp}/bad.json"], "{tmp}/bad.json", "not a results.json"),
    "report_bad_row": ("report", "bad_report_row", ["{tmp}/row.json"], "{tmp}/row.json", "a row lacks fields"),
    "report_missing": ("report", None, ["{tmp}/none.json"], "{tmp}/none.json", "cannot read it"),
    "plot_not_results": ("plot", "bad_report", ["{tmp}/bad.json", "--out-dir", "{tmp}/plots"], "{tmp}/bad.json",
                         "not a results.json"),
    "virtual_root_unusable": ("virtual", None, ["--root", "/proc/x", "--lifetime-s", "1"], "--root", "cannot be used"),
}


def _argv(command, extra, dev, key, pte):
    if command in ("report", "plot", "virtual"):
        return [command, *extra]
    argv = [command, "--device", dev.address, "--key", str(key)]
    if "--device" in extra:                  # the case's own address replaces the live one
        i = extra.index("--device")
        argv[2], extra = extra[i + 1], extra[:i] + extra[i + 2:]
    if command == "push":
        return argv + extra
    given = "--pte" in extra
    argv += [] if given else ["--pte", str(pte)]
    if command == "bench":
        argv += ["--prompt-lengths", "12", "40", "--decode-lengths", "4", "--runner", "python"]
        if "--prompt-lengths" in extra:
            argv = argv[:argv.index("--prompt-lengths")] + argv[argv.index("--decode-lengths"):]
        if "--decode-lengths" in extra:
            j = argv.index("--decode-lengths")
            argv = argv[:j] + argv[j + 2:]
    elif command == "generate":
        argv += [] if "--prompt" in extra else ["--prompt", "The clock struck"]
    return argv + extra


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_naming_it_before_any_transfer(case, tmp_path, key, tiny_llama_fp32, big_tokenizer,
                                                          capsys):
    command, spoil, extra, culprit, says = CASES[case]
    pte = _program(tmp_path, tiny_llama_fp32)
    if spoil:
        _spoil(spoil, pte, tmp_path, big_tokenizer)
    fill = {"tmp": str(tmp_path), "prog": str(pte.parent)}
    extra = [a.format(**fill) for a in extra]
    culprit = culprit.format(**fill)
    before = sorted(p.name for p in tmp_path.iterdir())
    with VirtualDevice(tmp_path / "device", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                       accept_new_keys=False, max_lifetime_s=120) as dev:
        code = main(_argv(command, extra, dev, key, pte))
        pushed = [str(p.relative_to(dev.sandbox.root)) for p in dev.sandbox.host_path("/data").rglob("*") if p.is_file()]
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and errors[0].startswith(f"error: {culprit}: ") and says in errors[0], errors
    assert "Traceback" not in err and out == ""
    assert pushed == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "device") == [b for b in before if b != "device"]


def test_the_same_input_gives_the_same_code_in_every_command(tmp_path, key, tiny_llama_fp32, capsys):
    """A missing program is 2 for bench and generate alike (generate gave 2, bench 3)."""
    codes = {}
    for command in ("bench", "generate"):
        argv = [command, "--device", "127.0.0.1:9", "--pte", str(tmp_path / "none.pte")]
        argv += ["--prompt", "hi"] if command == "generate" else []
        codes[command] = main(argv)
    assert codes == {"bench": 2, "generate": 2}
    assert capsys.readouterr().err.count("error: --pte: ") == 2


def test_a_bench_failing_late_keeps_its_finished_cells(tmp_path, key, tiny_llama_fp32, capsys):
    """The second cell hangs on the device (an injected fault): the first cell's row is already in
    the results folder, on stdout, and the missing cell is named."""
    out, m = tiny_llama_fp32
    res = tmp_path / "res"
    with VirtualDevice(tmp_path / "device", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                       accept_new_keys=False, max_lifetime_s=300,
                       faults=Faults(hang_commands=("--prompt-lengths 40",))) as dev:
        code = main(["bench", "--device", dev.address, "--key", str(key), "--pte", str(out / m["pte"]),
                     "--prompt-lengths", "12", "40", "--decode-lengths", "4", "--reps", "1", "--runner", "python",
                     "--run-timeout-s", "8", "--format", "json", "--results-dir", str(res)])
    stdout, err = capsys.readouterr()
    assert code == 4, err
    kept = json.loads((res / "results.json").read_text())
    assert [(r["prompt_tokens"], r["decode_tokens"]) for r in kept] == [(12, 4)]
    assert json.loads(stdout) == kept
    assert {f.name for f in res.iterdir()} == {"results.md", "results.csv", "results.json", "results.jsonl"}
    assert "kept 1 finished cell(s)" in err and "missing: prompt 40 decode 4" in err
    assert kept[0]["threads"] >= 1                      # the count the runner used, not the 0 asked


@pytest.fixture(scope="module")
def big_tokenizer(tmp_path_factory):
    from tests.native_helpers import big_tokenizer as make

    path = tmp_path_factory.mktemp("big_tok") / "tokenizer.json"
    make().save(str(path))
    return path
