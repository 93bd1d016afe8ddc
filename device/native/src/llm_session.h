// The native runner core: one loaded causal-LM program (`forward(tokens[1,S], input_pos[1])`
// with its KV cache inside) and the steps every front end needs — chunked prefill that reuses what
// the cache already holds (chats), greedy or sampled decode, last-position logits, context
// overflow, the delta kernel's counters, threads, CPU affinity and peak RSS. Used by the static
// runner (main.cc, chat_server.cc) and the Android JNI library; no allocation in the decode loop
// beyond the runtime's own.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace dlm {

// Exit codes shared by every front end.
constexpr int kExitOk = 0;
constexpr int kExitBadInput = 2;   // arguments, files, programs the runtime cannot run
constexpr int kExitRuntime = 3;    // a call failed at run time

// One error: a code and one line that names the problem.
struct Status {
  int code = kExitOk;
  std::string message;
  bool ok() const { return code == kExitOk; }
  static Status Ok() { return {}; }
  static Status BadInput(std::string m) { return {kExitBadInput, std::move(m)}; }
  static Status Runtime(std::string m) { return {kExitRuntime, std::move(m)}; }
};

// The program's constant methods (ExecuTorch's TextLLMRunner reads the same ones).
struct ProgramInfo {
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;       // longest prefill chunk
  int64_t max_context_len = 0;   // KV cache length
  int64_t n_layers = 0;
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;
  bool delta_attention = false;  // uses deltallm::delta_attention
  std::vector<std::string> operators;
};

// Called with the logits of the last position after every forward call (prefill chunk or decode
// step); return false to stop.
using LogitsSink = std::function<void(const float* logits, int64_t vocab)>;
// Called with every generated token; return false to stop generating.
using TokenSink = std::function<bool(int64_t token)>;

struct Timings {
  double prefill_ms = 0;   // time to first token (prefill + first argmax)
  double decode_ms = 0;    // all decode steps
  int64_t prompt_tokens = 0;     // the request's ids
  int64_t prefilled_tokens = 0;  // of those, run through the model; the rest came from the cache
  int64_t rewound_tokens = 0;    // cached tokens given up because the request diverged from them
  int64_t restart_pos = -1;      // delta programs: the position whose running state was restored (-1: none)
  int64_t decode_tokens = 0;
  int64_t reused_tokens() const { return prompt_tokens - prefilled_tokens; }
  double prefill_tps() const { return prefill_ms > 0 ? prefilled_tokens * 1e3 / prefill_ms : 0; }
  double decode_tps() const { return decode_ms > 0 ? decode_tokens * 1e3 / decode_ms : 0; }
};

struct SampleOptions {
  float temperature = 0.0f;   // 0: greedy
  uint64_t seed = 0;
};

struct GenerateRequest {
  std::vector<int64_t> ids;        // the whole sequence: a chat sends every turn so far, every time
  int64_t max_new_tokens = 0;      // decode steps after the first token (chosen from the prefill)
  SampleOptions sample;
  bool stop_at_eos = true;
  bool reuse = true;               // false: prefill from position 0 whatever the cache holds
  int64_t keep = 0;                // a prefix (the system prompt) the session keeps a restore point at
  const std::vector<int64_t>* forced = nullptr;   // decode step i is fed forced[i] (parity checks)
};

// Context overflow in a chat: when ids + reserve decode steps exceed max_context, whole turns after
// the first `keep` ids (the system prompt) are dropped, oldest first (turn_starts: where each turn
// begins, ascending, >= keep); when the last turn alone still leaves no room, reserve shrinks.
// Fails only when the system prompt and the last turn alone exceed the context.
struct ContextFit {
  std::vector<int64_t> ids;
  int dropped_turns = 0;
  int64_t dropped_tokens = 0;
  int64_t reserve = 0;
};
Status FitContext(const std::vector<int64_t>& ids, const std::vector<int64_t>& turn_starts, int64_t keep,
                  int64_t max_context, int64_t reserve, ContextFit* out);

class LlmSession {
 public:
  ~LlmSession();
  // Loads the program and its forward method; checks every operator is registered first, so a
  // missing one is named.
  static Status Load(const std::string& pte_path, std::unique_ptr<LlmSession>* out);

  const ProgramInfo& info() const { return info_; }
  double load_ms() const { return load_ms_; }

  // Checks prompt ids against the vocabulary and the context (prompt + decode tokens).
  Status CheckPrompt(const std::vector<int64_t>& ids, int64_t decode_tokens) const;

  // One forward call of tokens [start_pos, start_pos + n); `logits` gets the last position's.
  Status Forward(const int64_t* tokens, int64_t n, int64_t start_pos, std::vector<float>* logits);

  // Prefill r.ids and decode up to r.max_new_tokens steps feeding back the chosen token (stops at
  // EOS when r.stop_at_eos, or when on_token returns false or *stop is set: the token shown last is
  // then not fed, so the cache holds exactly the tokens before it). `on_token` sees every chosen
  // token, the first one included.
  //
  // The session remembers the ids its cache holds (positions [0, cached().size())). With r.reuse it
  // prefills only what follows their longest common prefix with r.ids (the last id always runs: its
  // logits choose the first token). A request that diverges inside the cache moves back: dense
  // caches continue at the divergence (every row of their state is indexed by position); delta
  // programs also restore their running state (k̂ and the raw-key ring, DLM_RUNNING_STATE_NAMES)
  // from the nearest copy at or before the divergence — the session takes one at r.keep and at the
  // end of every prompt; position 0 needs none — and re-prefill from there.
  Status Generate(const GenerateRequest& r, const TokenSink& on_token, const LogitsSink& on_logits, Timings* t,
                  const std::atomic<bool>* stop = nullptr);

  const std::vector<int64_t>& cached() const { return cached_; }
  // Forgets the cache: the next request prefills from position 0.
  void Reset();
  // Positions the running state can be restored at (delta programs; empty for dense ones).
  std::vector<int64_t> restore_points() const;
  // Bytes of running state per copy (0 for dense programs); false when a delta program carries no
  // buffer names (exported before they were written): its rewinds then restart at position 0.
  size_t running_state_bytes() const;
  bool exact_rewind() const;
  // FNV-1a 64 of the running state (tests compare a rewound session with a fresh one).
  uint64_t RunningStateHash() const;

  int64_t Choose(const std::vector<float>& logits, const SampleOptions& sample);

 private:
  LlmSession();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ProgramInfo info_;
  double load_ms_ = 0;
  std::mt19937_64 rng_;
  uint64_t seeded_ = ~0ull;
  std::vector<int64_t> cached_;
  int64_t keep_ = 0;
  Status Prefill(const std::vector<int64_t>& ids, int64_t start, const LogitsSink& on_logits,
                 std::vector<float>* logits);
};

// Threads of ExecuTorch's threadpool (XNNPACK, custom ops and our kernel share it); 0: the
// runtime's default (the count it started with, also after another count was set). Returns the
// count in use.
int SetThreads(int n);
// Pins this process (and threads created after) to a CPU list like "4-7" or "0,2,4".
Status SetAffinity(const std::string& cpu_list);
// FNV-1a 64 of n bytes, continuing from h (start with kFnvBasis): digests tests compare.
constexpr uint64_t kFnvBasis = 1469598103934665603ull;
uint64_t Fnv1a64(uint64_t h, const void* p, size_t n);
// Peak resident set (VmHWM) of this process in MB; < 0 if unknown.
double PeakRssMb();
// "arm64-v8a" or "x86_64": the ABI this binary was built for.
const char* BuildAbi();

}  // namespace dlm
