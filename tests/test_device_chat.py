"""`python -m device chat` against the virtual arm64 phone: the persistent runner under qemu over an
ADB shell-v2 stream, the conversation on the host (template, turns), a stop, a second turn that
reuses the cache."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from device.bench import DeviceFiles
from device.chat_session import ChatClient, Conversation
from device.cli import main
from device.keys import ensure_key
from device.transport import AdbTcpTransport
from device.virtual import VirtualDevice

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture(scope="module")
def tiny_delta_512(tmp_path_factory):
    """The tiny delta program with a 512-token context: its byte-level tokenizer spends ~100 tokens on
    a ChatML turn."""
    from tests.conftest import export_with_cli

    out = tmp_path_factory.mktemp("tiny_delta_512")
    return out, export_with_cli("tiny_llama.yaml", out, "attention.kind=delta", "attention.theta=0.3",
                                "attention.gamma=0.1", "attention.w_decode=4", "export.max_context_len=512")


@pytest.fixture
def chat_program(tmp_path, tiny_delta_512):
    """The tiny delta program with a ChatML template in its manifest (the random model ships none)."""
    out, m = tiny_delta_512
    prog = tmp_path / "prog"
    shutil.copytree(out, prog)
    manifest = prog / Path(m["pte"]).with_suffix(".json").name
    data = json.loads(manifest.read_text())
    data["chat_template"] = CHATML
    manifest.write_text(json.dumps(data))
    return prog / m["pte"], data


def device(tmp_path, key):
    return VirtualDevice(tmp_path / "device", authorized_keys=[Path(str(key) + ".pub").read_bytes()],
                         accept_new_keys=False, max_lifetime_s=600)


def test_chat_streams_answers_and_the_second_turn_reuses_the_cache(tmp_path, key, runners, chat_program, capsys,
                                                                     monkeypatch):
    pte, _ = chat_program
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\nTell me more\n"))
    with device(tmp_path, key) as dev:
        code = main(["chat", "--device", dev.address, "--key", str(key), "--pte", str(pte), "--system", "Be brief.",
                     "--max-new-tokens", "6", "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    answers = [json.loads(line) for line in cap.out.splitlines()]
    assert [a["turn"] for a in answers] == [1, 2]
    first, second = answers
    assert first["reused_tokens"] == 0 and len(first["tokens"]) == 6
    # turn 2 re-sends turn 1: everything the cache held up to the answer's re-tokenised text is reused
    assert second["reused_tokens"] >= first["prompt_tokens"]
    assert second["prefilled_tokens"] < second["prompt_tokens"] - first["prompt_tokens"] + 6
    assert "turn 2" in cap.err and "reused" in cap.err and "on arm64-v8a" in cap.err


def test_stop_over_the_adb_stream_then_the_session_goes_on(tmp_path, key, runners, chat_program):
    pte, manifest = chat_program
    from device.prompts import load_tokenizer

    with device(tmp_path, key) as dev:
        t = AdbTcpTransport(dev.address, key_path=key)
        try:
            files = DeviceFiles("/data/local/tmp/deltallm", manifest["pte_sha256"], "x")
            t.check(["mkdir", "-p", files.folder], "mkdir")
            t.push(pte, files.path(pte.name))
            t.push(runners["arm64-v8a"], files.path("deltallm_runner"))
            t.check(["chmod", "755", files.path("deltallm_runner")], "chmod")
            stream = t.open_shell(files.launch_foreground([files.path("deltallm_runner"), "chat", "--pte",
                                                           files.path(pte.name)]), 300)
            client = ChatClient(stream, t.name, 300)
            assert client.ready["abi"] == "arm64-v8a" and client.ready["exact_rewind"]
            conv = Conversation(manifest, load_tokenizer(pte.parent / manifest["tokenizer"]), "Be brief.")
            ids, keep, starts = conv.request("Hello")
            assert 0 < keep < len(ids) and starts == [keep]
            stopped = client.generate(ids, keep, starts, max_new_tokens=40, should_stop=lambda: True)
            assert stopped["stopped"] and len(stopped["tokens"]) < 40
            nxt = client.generate(ids + stopped["tokens"] + ids[-3:], keep, starts, max_new_tokens=3)
            assert nxt["reused_tokens"] == len(ids) + len(stopped["tokens"]) - 1 and not nxt["stopped"]
            assert client.close() == 0
        finally:
            t.close()


def test_ctrl_c_stops_the_answer_not_the_session(tmp_path, key, runners, chat_program):
    """The command as a user runs it: a real SIGINT while the answer streams."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pte, _ = chat_program
    with device(tmp_path, key) as dev:
        p = subprocess.Popen([sys.executable, "-m", "device", "chat", "--device", dev.address, "--key", str(key),
                              "--pte", str(pte), "--system", "Be brief.", "--max-new-tokens", "380", "--json"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        err = ""
        while "Ctrl-C stops an answer" not in err:       # the runner is up on the device
            line = p.stderr.readline()
            assert line, f"chat ended early: {err}"
            err += line
        p.stdin.write("Tell me a long story\n")
        p.stdin.flush()
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGINT)
        first = json.loads(p.stdout.readline())
        p.stdin.write("Go on\n/quit\n")
        p.stdin.flush()
        out, rest = p.communicate(timeout=300)
    assert p.returncode == 0, err + rest
    second = json.loads(out.splitlines()[0])
    assert first["stopped"] and len(first["tokens"]) < 380, first["tokens"]
    assert not second["stopped"] and second["turn"] == 2
    # the cache held what was shown; the tiny tokenizer re-tokenises the answer's first bytes with the
    # template's newline, so the delta program restores its copy at the system prompt's end
    assert first["cached_tokens"] == first["prompt_tokens"] + len(first["tokens"]) - 1
    assert 0 < second["reused_tokens"] <= first["cached_tokens"]
    assert second["reused_tokens"] + second["prefilled_tokens"] == second["prompt_tokens"]
