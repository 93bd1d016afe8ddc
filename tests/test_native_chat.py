"""The runner's chat server (`deltallm_runner chat`, device/native/src/chat_server.h): the cache kept
across requests, rewinds (a delta program's running state restored bit for bit), context overflow,
stop, bad requests; x86-64 directly and arm64 under qemu."""
from __future__ import annotations

import os

import pytest

from device.chat_session import ChatClient, ChatRequestError
from device.shell_stream import LocalShellStream

from tests.native_helpers import native_cmd

X = list(range(3, 40))          # a "system prompt + first turn"
Y = [41, 42, 43, 44, 45, 46]   # a continuation given up later
Z = [50, 51, 52]


@pytest.fixture
def chat(runners):
    opened = []

    def start(program, abi="x86_64", threads=2):
        out, m = program
        if abi == "arm64-v8a":
            os.environ.setdefault("QEMU_CPU", "max")
        c = ChatClient(LocalShellStream(native_cmd(runners[abi], abi) + ["chat", "--pte", str(out / m["pte"]),
                                                                         "--threads", str(threads)]), "host", 300)
        opened.append(c)
        return c

    yield start
    for c in opened:
        assert c.close() == 0


@pytest.mark.parametrize("abi", ["x86_64", "arm64-v8a"])
def test_delta_rewind_restores_the_running_state_bit_for_bit(chat, tiny_llama_delta, abi):
    a = chat(tiny_llama_delta, abi)
    assert a.ready["delta_attention"] and a.ready["exact_rewind"] and a.ready["running_state_bytes"] > 0
    a.generate(X, keep=5, max_new_tokens=1)
    a.generate(X + Y, max_new_tokens=6)                         # decodes past X + Y, then is given up
    rewound = a.generate(X + Z, max_new_tokens=6, digest=True)
    assert rewound["restart_pos"] == len(X) and rewound["prefilled_tokens"] == len(Z)
    assert rewound["rewound_tokens"] == len(Y) + 5
    fresh = chat(tiny_llama_delta, abi)                         # the same calls, without the detour
    fresh.generate(X, keep=5, max_new_tokens=1)
    direct = fresh.generate(X + Z, max_new_tokens=6, digest=True)
    assert direct["restart_pos"] == -1 and direct["rewound_tokens"] == 0
    assert rewound["logits_fnv1a64"] == direct["logits_fnv1a64"]
    assert rewound["tokens"] == direct["tokens"]
    assert a.state()["running_fnv1a64"] == fresh.state()["running_fnv1a64"]


def test_delta_rewind_without_the_restore_point_differs(chat, tiny_llama_delta):
    """The comparison above is not vacuous: the same ids prefilled in other calls (from position 0
    after a reset) give other logits, as a delta program's band follows each call's length."""
    a = chat(tiny_llama_delta)
    a.generate(X, keep=5, max_new_tokens=1)
    a.generate(X + Y, max_new_tokens=6)
    r = a.generate(X + Z, max_new_tokens=6, digest=True)
    b = chat(tiny_llama_delta)
    b.generate(X, keep=5, max_new_tokens=1)
    b.generate(X + Y, max_new_tokens=6)
    b.reset()
    other = b.generate(X + Z, keep=5, max_new_tokens=6, digest=True)   # prefilled from 0 in other chunks
    assert other["reused_tokens"] == 0 and other["prefilled_tokens"] == len(X + Z)
    assert other["logits_fnv1a64"] != r["logits_fnv1a64"]


def test_dense_turns_prefill_only_new_tokens_and_answer_as_without_reuse(chat, tiny_llama_fp32):
    a = chat(tiny_llama_fp32)
    first = a.generate(X, max_new_tokens=8)
    history = X + first["tokens"]
    second = a.generate(history + Z, max_new_tokens=8)
    # the cache holds X and 7 fed tokens; the 8th token shown was never fed
    assert second["reused_tokens"] == len(X) + 7 and second["prefilled_tokens"] == len(Z) + 1
    assert second["rewound_tokens"] == 0 and second["restart_pos"] == -1
    plain = chat(tiny_llama_fp32).generate(history + Z, max_new_tokens=8, reuse=False)
    assert plain["reused_tokens"] == 0 and plain["tokens"] == second["tokens"]


def test_overflow_drops_the_oldest_turns_and_keeps_the_system_prompt(chat, tiny_llama_fp32):
    a = chat(tiny_llama_fp32)      # context 128
    system, turns = list(range(3, 13)), [list(range(100 + 30 * k, 130 + 30 * k)) for k in range(4)]
    ids, starts = list(system), []
    for t in turns:
        starts.append(len(ids))
        ids += t
    done = a.generate(ids, keep=len(system), turns=starts, max_new_tokens=50)
    # 130 ids + 49 decode steps > 128; without one turn 100 + 49 still are; without two, 70 + 49 fit
    assert done["dropped_turns"] == 2 and done["dropped_tokens"] == 60
    assert done["prompt_tokens"] == len(system) + 60
    same = chat(tiny_llama_fp32).generate(system + turns[2] + turns[3], keep=len(system), max_new_tokens=50)
    assert same["tokens"] == done["tokens"]
    with pytest.raises(ChatRequestError, match="system prompt and the last turn alone"):
        a.generate(system + list(range(3, 130)), keep=len(system), turns=[len(system)], max_new_tokens=4)
    assert a.generate(X, max_new_tokens=2)["tokens"]      # the session goes on


def test_stop_ends_the_answer_and_the_cache_matches_what_was_shown(chat, tiny_llama_delta):
    a = chat(tiny_llama_delta)
    seen = []   # the tiny model decodes thousands of tokens a second: the stop goes out with the request
    done = a.generate(X, max_new_tokens=80, on_token=seen.append, should_stop=lambda: True)
    assert done["stopped"] and 1 <= len(done["tokens"]) < 80 and done["tokens"] == seen
    assert done["cached_tokens"] == len(X) + len(seen) - 1
    nxt = a.generate(X + seen + Z, max_new_tokens=2)
    assert nxt["reused_tokens"] == len(X) + len(seen) - 1 and nxt["rewound_tokens"] == 0
    assert not nxt["stopped"]


@pytest.mark.parametrize("request_line, message", [
    ('{"op": "generate", "id": 1, "ids": [1, 99999]}', "outside the vocabulary"),
    ('{"op": "generate", "id": 1, "ids": "abc"}', "ids: expected an array of integers"),
    ('{"op": "generate", "id": 1, "ids": [1, 2], "max_new_tokens": 0}', "max_new_tokens: expected an integer >= 1"),
    ('{"op": "generate", "id": 1, "ids": [1, 2], "keep": 5}', "keep 5 is outside"),
    ('{"op": "generate", "id": 1, "ids": [1, 2, 3], "turns": [2, 1]}', "turns must be ascending"),
    ('{"op": "generate", "id": 1, "ids": [1, 2], "temperature": -1}', "temperature"),
    ('{"op": "generate", "id": 1, "ids": [1, 2], "reuse": "yes"}', "bad request"),
    ('{"op": "dance"}', "unknown op 'dance'"),
    ('{"op": 7, "id": "x"}', "unknown op ''"),
    ('not json', "not JSON"),
])
def test_bad_requests_get_one_error_and_the_session_goes_on(chat, tiny_llama_fp32, request_line, message):
    a = chat(tiny_llama_fp32)
    a.stream.write(request_line.encode() + b"\n")
    with pytest.raises(ChatRequestError, match=message) as e:
        a._expect("done")
    assert e.value.exit_code == 2
    assert a.generate(X, max_new_tokens=2)["tokens"]
