// `deltallm_runner chat`: a persistent session that reads requests on stdin, one JSON object a
// line, and streams events on stdout, one JSON object a line (protocol deltallm-chat/1). Used by
// `python -m device chat` over an ADB shell (device/chat_client.py) and by tests on the host.
//
// Requests:
//   {"op": "generate", "id": 1, "ids": [...], "max_new_tokens": 128, "keep": 31, "turns": [31, 58, ...],
//    "temperature": 0, "seed": 0, "stop_at_eos": true, "reuse": true, "digest": false}
//       ids: the whole conversation so far (the session reuses what its cache holds, llm_session.h);
//       keep: the system prompt's length (kept on overflow, a restore point); turns: where each
//       droppable turn starts (overflow drops the oldest); max_new_tokens counts every token generated.
//   {"op": "stop", "id": 1}     stop generation `id` (or an earlier one) after the token it is on;
//                               read while generating, so it is answered at once
//   {"op": "reset"}             forget the cache (a new chat)
//   {"op": "state"}             cached tokens, restore points, a hash of the running state
//   {"op": "quit"} or end of input
// Events:
//   {"event": "ready", "protocol": ..., program facts}
//   {"event": "token", "id": 1, "token": 123}          each generated token, flushed at once
//   {"event": "done", "id": 1, "tokens": [...], figures: ttft_ms, prefill_tps, decode_tps, prompt_tokens,
//    reused_tokens, prefilled_tokens, rewound_tokens, restart_pos, dropped_turns, dropped_tokens,
//    cached_tokens, stopped, sparsity, peak_rss_mb[, logits_fnv1a64]}
//   {"event": "reset"} / {"event": "state", ...}
//   {"event": "error", "id": 1, "code": 2|3, "message": "..."}   the session goes on
#pragma once

#include <cstdio>

#include "llm_session.h"

namespace dlm {

constexpr const char* kChatProtocol = "deltallm-chat/1";

// Serves requests from `in` until quit or end of input; returns the exit code (0).
int RunChatServer(LlmSession& session, int threads, FILE* in, FILE* out);

}  // namespace dlm
