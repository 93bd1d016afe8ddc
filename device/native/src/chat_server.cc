// The chat server (see chat_server.h): a reader thread takes request lines off stdin, so a stop
// reaches the session while it generates; the main thread serves the other requests in order.
#include "chat_server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <deltaattn.h>

#include <nlohmann/json.hpp>

#include "bench.h"

namespace dlm {
namespace {

using nlohmann::json;

class Output {
 public:
  explicit Output(FILE* f) : f_(f) {}
  void Send(const json& event) {
    const std::string line = event.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard<std::mutex> lock(mu_);
    std::fwrite(line.data(), 1, line.size(), f_);
    std::fflush(f_);
  }

 private:
  FILE* f_;
  std::mutex mu_;
};

// Requests read off the input; stops are applied on arrival, not queued.
class Inbox {
 public:
  void Push(json r) {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push_back(std::move(r));
    cv_.notify_one();
  }
  json Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !q_.empty(); });
    json r = std::move(q_.front());
    q_.pop_front();
    return r;
  }
  std::atomic<long long> stop_up_to{0};   // generations with id <= this stop
  std::atomic<long long> current{0};      // the generation running (a stop without an id stops it)

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<json> q_;
};

void ReadInput(FILE* in, Inbox* inbox, Output* out) {
  std::string line;
  char buf[65536];
  while (std::fgets(buf, sizeof buf, in) != nullptr) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;   // a long line: read on
    json r;
    try {
      r = json::parse(line);
    } catch (const std::exception&) {
      out->Send({{"event", "error"}, {"code", kExitBadInput}, {"message", "a request line is not JSON"}});
      line.clear();
      continue;
    }
    line.clear();
    if (r.is_object() && r.contains("op") && r["op"].is_string() && r["op"].get<std::string>() == "stop") {
      const long long id = r.contains("id") && r["id"].is_number_integer() ? r["id"].get<long long>()
                                                                         : inbox->current.load();
      long long cur = inbox->stop_up_to.load();
      while (id > cur && !inbox->stop_up_to.compare_exchange_weak(cur, id)) {
      }
      continue;
    }
    inbox->Push(std::move(r));
  }
  inbox->Push({{"op", "quit"}});
}

// Reads an integer field (absent: dflt); false with `err` set when it is not an integer >= lo.
bool IntField(const json& r, const char* k, long long dflt, long long lo, long long* v, std::string* err) {
  *v = dflt;
  if (!r.contains(k)) return true;
  if (!r[k].is_number_integer() || r[k].get<long long>() < lo) {
    *err = std::string(k) + ": expected an integer >= " + std::to_string(lo);
    return false;
  }
  *v = r[k].get<long long>();
  return true;
}

bool IdList(const json& r, const char* k, std::vector<int64_t>* out, std::string* err) {
  out->clear();
  if (!r.contains(k)) return true;
  if (!r[k].is_array()) return (*err = std::string(k) + ": expected an array of integers"), false;
  for (const auto& x : r[k]) {
    if (!x.is_number_integer()) return (*err = std::string(k) + ": expected an array of integers"), false;
    out->push_back(x.get<int64_t>());
  }
  return true;
}

std::string Hex(uint64_t h) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void Generate(LlmSession& s, const json& r, Inbox& inbox, Output& out) {
  const long long id = r.contains("id") && r["id"].is_number_integer() ? r["id"].get<long long>() : 0;
  auto error = [&](int code, const std::string& m) {
    out.Send({{"event", "error"}, {"id", id}, {"code", code}, {"message", m}});
  };
  std::string err;
  std::vector<int64_t> ids, turns;
  long long max_new = 0, keep = 0, seed = 0;
  if (!IdList(r, "ids", &ids, &err) || !IdList(r, "turns", &turns, &err) ||
      !IntField(r, "max_new_tokens", 128, 1, &max_new, &err) || !IntField(r, "keep", 0, 0, &keep, &err) ||
      !IntField(r, "seed", 0, 0, &seed, &err))
    return error(kExitBadInput, err);
  SampleOptions sample;
  sample.seed = static_cast<uint64_t>(seed);
  if (r.contains("temperature")) {
    if (!r["temperature"].is_number() || !(r["temperature"].get<double>() >= 0.0))
      return error(kExitBadInput, "temperature: expected a number >= 0");
    sample.temperature = r["temperature"].get<float>();
  }
  ContextFit fit;
  Status st = FitContext(ids, turns, keep, s.info().max_context_len, max_new - 1, &fit);
  if (!st.ok()) return error(st.code, st.message);
  GenerateRequest req;
  req.ids = std::move(fit.ids);
  req.max_new_tokens = fit.reserve;
  req.sample = sample;
  req.stop_at_eos = r.value("stop_at_eos", true);
  req.reuse = r.value("reuse", true);
  req.keep = keep;
  const bool digest = r.value("digest", false);
  inbox.current.store(id);
  uint64_t logits_hash = kFnvBasis;
  std::vector<int64_t> tokens;
  bool stopped = false;
  ResetSparsity();
  Timings t;
  st = s.Generate(
      req,
      [&](int64_t tok) {
        tokens.push_back(tok);
        out.Send({{"event", "token"}, {"id", id}, {"token", tok}});
        if (inbox.stop_up_to.load() >= id) stopped = true;
        return !stopped;
      },
      digest ? LogitsSink([&](const float* l, int64_t v) { logits_hash = Fnv1a64(logits_hash, l, sizeof(float) * v); })
             : LogitsSink(),
      &t);
  if (!st.ok()) return error(st.code, st.message);
  json done = {{"event", "done"}, {"id", id}, {"tokens", tokens}, {"ttft_ms", t.prefill_ms},
               {"prefill_tps", t.prefill_tps()}, {"decode_tps", t.decode_tps()}, {"prompt_tokens", t.prompt_tokens},
               {"reused_tokens", t.reused_tokens()}, {"prefilled_tokens", t.prefilled_tokens},
               {"rewound_tokens", t.rewound_tokens}, {"restart_pos", t.restart_pos},
               {"dropped_turns", fit.dropped_turns}, {"dropped_tokens", fit.dropped_tokens},
               {"cached_tokens", s.cached().size()}, {"stopped", stopped}, {"peak_rss_mb", PeakRssMb()}};
  done["sparsity"] = json::parse(SparsityJson());
  if (digest) done["logits_fnv1a64"] = Hex(logits_hash);
  out.Send(done);
}

void Serve(LlmSession& s, const std::string& op, const json& r, Inbox& inbox, Output& out) {
  if (op == "generate") {
    Generate(s, r, inbox, out);
  } else if (op == "reset") {
    s.Reset();
    out.Send({{"event", "reset"}});
  } else if (op == "state") {
    out.Send({{"event", "state"}, {"cached_tokens", s.cached().size()}, {"restore_points", s.restore_points()},
              {"running_fnv1a64", Hex(s.RunningStateHash())}});
  } else {
    out.Send({{"event", "error"}, {"code", kExitBadInput},
              {"message", "unknown op '" + op + "' (generate, stop, reset, state, quit)"}});
  }
}

}  // namespace

int RunChatServer(LlmSession& s, int threads, FILE* in, FILE* out_file) {
  // Shared with the reader thread, which may still be in a read (or pushing the end of input) when
  // a quit returns from here: it must not find them destroyed.
  auto out_ptr = std::make_shared<Output>(out_file);
  auto inbox_ptr = std::make_shared<Inbox>();
  Output& out = *out_ptr;
  Inbox& inbox = *inbox_ptr;
  const ProgramInfo& i = s.info();
  out.Send({{"event", "ready"}, {"protocol", kChatProtocol}, {"abi", BuildAbi()}, {"kernel_arch", dlm_kernel_arch()},
            {"threads", threads}, {"vocab_size", i.vocab_size}, {"max_context_len", i.max_context_len},
            {"max_seq_len", i.max_seq_len}, {"bos_id", i.bos_id}, {"eos_ids", i.eos_ids},
            {"delta_attention", i.delta_attention}, {"exact_rewind", s.exact_rewind()},
            {"running_state_bytes", s.running_state_bytes()}, {"load_ms", s.load_ms()}});
  std::thread reader([in, inbox_ptr, out_ptr] { ReadInput(in, inbox_ptr.get(), out_ptr.get()); });
  reader.detach();   // blocked in a read at exit; the process ends with it
  for (;;) {
    const json r = inbox.Pop();
    std::string op;
    try {
      op = r.is_object() && r.contains("op") && r["op"].is_string() ? r["op"].get<std::string>() : "";
      if (op == "quit") break;
      Serve(s, op, r, inbox, out);
    } catch (const std::exception& e) {   // a field of the wrong type
      out.Send({{"event", "error"}, {"code", kExitBadInput}, {"message", std::string("bad request: ") + e.what()}});
    }
  }
  return kExitOk;
}

}  // namespace dlm
