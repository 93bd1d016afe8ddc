"""`python -m device chat`: an interactive chat with a program on a phone or board, over ADB, on
a persistent native runner (`deltallm_runner chat`, protocol in device/native/src/chat_server.h).

The host keeps the conversation: it renders the program's chat template over every turn so far,
tokenises it and sends the whole sequence each turn, with where the system prompt ends and where
each turn starts. The runner keeps its cache between turns and prefills only what follows the
part it already holds; when a turn would overflow the context it drops the oldest turns (the
system prompt stays) and says so. Ctrl-C stops the answer, not the session; /reset starts a new
chat, /quit (or the end of input) ends it. Answers go to stdout, figures to stderr.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .chat import render_chat
from .errors import DeviceError
from .shell_stream import STDERR, ShellStream

PROTOCOL = "deltallm-chat/1"


class ChatRequestError(DeviceError):
    """The runner refused a request (bad input, exit code 2) or a call failed (3); the session goes on."""

    def __init__(self, device: str, message: str, code: int):
        super().__init__(device, "chat", message)
        self.exit_code = code


@dataclass
class Conversation:
    """Messages -> the ids, the system prompt's length (`keep`) and the turn starts of a request."""

    manifest: dict
    tokenizer: object
    system: Optional[str] = None
    turns: List[Tuple[str, str]] = field(default_factory=list)   # (user, answer)

    def _messages(self, upto: Optional[int] = None, user: Optional[str] = None) -> List[Dict[str, str]]:
        m = [{"role": "system", "content": self.system}] if self.system else []
        for u, a in self.turns[:upto]:
            m += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        return m + ([{"role": "user", "content": user}] if user is not None else [])

    def _encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _render(self, messages, gen: bool) -> str:
        text = render_chat(self.manifest, messages, add_generation_prompt=gen)
        if text is None:
            raise DeviceError("host", "chat", "the program carries no chat template (its manifest has no "
                                              "chat_template): `python -m device generate --raw` sends raw text")
        return text

    def _system_len(self, ids: List[int]) -> int:
        """Where the first user turn begins: its header found by rendering two turns (template-agnostic)."""
        a, x, b = "\u27e6first\u27e7", "\u27e6answer\u27e7", "\u27e6second\u27e7"
        sys_m = [{"role": "system", "content": self.system}] if self.system else []
        one = self._render(sys_m + [{"role": "user", "content": a}, {"role": "assistant", "content": x}], False)
        two = self._render(sys_m + [{"role": "user", "content": a}, {"role": "assistant", "content": x},
                                    {"role": "user", "content": b}], False)
        if not two.startswith(one) or b not in two[len(one):]:
            return 0
        header = two[len(one):two.index(b, len(one))]
        first = one.find(header)
        if first <= 0:
            return 0
        head = self._encode(one[:first])
        return len(head) if ids[:len(head)] == head else 0

    def request(self, user: str) -> Tuple[List[int], int, List[int]]:
        ids = self._encode(self._render(self._messages(user=user), True))
        keep = self._system_len(ids)
        starts = [keep]
        for k in range(1, len(self.turns) + 1):
            prefix = self._encode(self._render(self._messages(upto=k), False))
            if ids[:len(prefix)] == prefix and prefix and len(prefix) > starts[-1]:
                starts.append(len(prefix))
        return ids, keep, starts

    def answered(self, user: str, answer: str, dropped_turns: int = 0) -> None:
        del self.turns[:dropped_turns]
        self.turns.append((user, answer))


class ChatClient:
    """The protocol over a ShellStream: requests out, events in."""

    def __init__(self, stream: ShellStream, name: str = "device", timeout_s: float = 600.0):
        self.stream, self.name, self.timeout_s = stream, name, timeout_s
        self._buf = b""
        self.log: List[str] = []          # the runner's stderr
        self._next_id = 0
        self.ready = self._expect("ready")
        if self.ready.get("protocol") != PROTOCOL:
            raise DeviceError(name, "chat", f"the runner speaks {self.ready.get('protocol')!r}, not {PROTOCOL}: "
                                            "rebuild it (python -m device build-runner)")

    def send(self, obj: dict) -> None:
        self.stream.write((json.dumps(obj) + "\n").encode())

    def _event(self, timeout_s: float) -> Optional[dict]:
        """The next event, None if none came within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for kind, data in self.stream.read(min(left, 0.1)):
                if kind == STDERR:
                    self.log += data.decode(errors="replace").splitlines()
                else:
                    self._buf += data
            if self.stream.exit_code is not None and b"\n" not in self._buf:
                tail = " | ".join(self.log[-3:]) or "no message"
                raise DeviceError(self.name, "chat", f"the runner exited with {self.stream.exit_code}: {tail}")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise DeviceError(self.name, "chat", f"the runner printed a line that is not JSON: {line[:120]!r}") from None

    def _expect(self, kind: str) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            ev = self._event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                raise DeviceError(self.name, "chat", f"no '{kind}' from the runner within {self.timeout_s:g} s")
            if ev.get("event") == "error":
                raise ChatRequestError(self.name, ev.get("message", "?"), int(ev.get("code", 3)))
            if ev.get("event") == kind:
                return ev

    def generate(self, ids: List[int], keep: int = 0, turns: Optional[List[int]] = None, max_new_tokens: int = 128,
                 temperature: float = 0.0, seed: int = 0, reuse: bool = True, digest: bool = False,
                 on_token: Optional[Callable[[int], None]] = None,
                 should_stop: Callable[[], bool] = lambda: False) -> dict:
        self._next_id += 1
        rid = self._next_id
        self.send({"op": "generate", "id": rid, "ids": list(ids), "keep": keep, "turns": list(turns or []),
                   "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed, "reuse": reuse,
                   "digest": digest})
        stop_sent = False
        last = time.monotonic()
        while True:
            if should_stop() and not stop_sent:
                self.send({"op": "stop", "id": rid})
                stop_sent = True
            ev = self._event(0.1)
            if ev is None:
                if time.monotonic() - last > self.timeout_s:
                    raise DeviceError(self.name, "chat", f"no token within {self.timeout_s:g} s")
                continue
            last = time.monotonic()
            kind = ev.get("event")
            if kind == "token" and ev.get("id") == rid:
                if on_token:
                    on_token(int(ev["token"]))
            elif kind == "done" and ev.get("id") == rid:
                return ev
            elif kind == "error":
                raise ChatRequestError(self.name, ev.get("message", "?"), int(ev.get("code", 3)))

    def state(self) -> dict:
        self.send({"op": "state"})
        return self._expect("state")

    def reset(self) -> None:
        self.send({"op": "reset"})
        self._expect("reset")

    def close(self) -> int:
        try:
            self.send({"op": "quit"})
            self.stream.close_stdin()
            deadline = time.monotonic() + 30
            while self.stream.exit_code is None and time.monotonic() < deadline:
                self.stream.read(0.2)
        except DeviceError:
            pass
        self.stream.close()
        return self.stream.exit_code if self.stream.exit_code is not None else 255


def figures(done: dict, turn: int) -> str:
    """One line of figures per answer (stderr)."""
    pre = ((done.get("sparsity") or {}).get("prefill") or {}).get("total") or {}
    parts = [f"turn {turn}", f"{done['prompt_tokens']} prompt tokens: {done['reused_tokens']} reused, "
                             f"{done['prefilled_tokens']} prefilled",
             f"{len(done['tokens'])} generated", f"TTFT {done['ttft_ms']:.0f} ms",
             f"prefill {done['prefill_tps']:.1f} tok/s", f"decode {done['decode_tps']:.1f} tok/s"]
    if done.get("rewound_tokens"):
        parts.append(f"rewound {done['rewound_tokens']}")
    if done.get("dropped_turns"):
        parts.append(f"context full: dropped the oldest {done['dropped_turns']} turn(s), "
                     f"{done['dropped_tokens']} tokens")
    if pre.get("macs_dense"):
        parts.append(f"S_c prefill {pre['s_c']:.1%}")
    if done.get("stopped"):
        parts.append("stopped")
    return "[" + " | ".join(parts) + "]"


class _Interrupts:
    """Ctrl-C while an answer streams sets a flag (the answer stops); at the prompt it ends the chat."""

    def __init__(self):
        self.hit = False
        self._old = None

    def __enter__(self):
        self.hit = False
        self._old = signal.signal(signal.SIGINT, lambda *_: setattr(self, "hit", True))
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)


def run_chat(client: ChatClient, conv: Conversation, eos: set, lines, out=None, err=None,
             max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 0, as_json: bool = False,
             prompt: bool = False) -> int:
    """The loop: a user message per line of `lines` (/reset, /quit), each answer streamed to `out`."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        _loop(client, conv, eos, lines, out, err, max_new_tokens, temperature, seed, as_json, prompt)
    except KeyboardInterrupt:       # Ctrl-C at the prompt (not while an answer streams) ends the chat
        print("", file=err)
    return 0


def _loop(client, conv, eos, lines, out, err, max_new_tokens, temperature, seed, as_json, prompt) -> None:
    turn = 0
    for line in lines:
        user = line.rstrip("\n")
        if user.strip() == "/quit":
            break
        if user.strip() == "/reset":
            client.reset()
            conv.turns.clear()
            turn = 0
            print("[new chat]", file=err)
            continue
        if not user.strip():
            continue
        turn += 1
        ids, keep, starts = conv.request(user)
        answer: List[int] = []
        shown = [0]

        def on_token(tok: int) -> None:
            if tok in eos:
                return
            answer.append(tok)
            text = conv.tokenizer.decode(answer, skip_special_tokens=True)
            if not as_json and not text.endswith("\ufffd"):
                out.write(text[shown[0]:])
                out.flush()
                shown[0] = len(text)

        with _Interrupts() as intr:
            done = client.generate(ids, keep, starts, max_new_tokens, temperature, seed, on_token=on_token,
                                   should_stop=lambda: intr.hit)
        text = conv.tokenizer.decode(answer, skip_special_tokens=True)
        conv.answered(user, text, int(done.get("dropped_turns", 0)))
        if as_json:
            out.write(json.dumps({**done, "turn": turn, "text": text}) + "\n")
        else:
            out.write(text[shown[0]:] + "\n")
        out.flush()
        print(figures(done, turn), file=err)
        if prompt:
            print("> ", end="", file=err, flush=True)
