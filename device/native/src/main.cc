// deltallm_runner: a thin command line over the runner core (llm_session.h, bench.h).
//
//   deltallm_runner bench    --pte M.pte --prompt-ids ids.bin --out result.json
//                            [--prompt-lengths 64 256] [--decode-lengths 16] [--warmup 1] [--reps 3]
//                            [--threads N] [--cpus 4-7]
//   deltallm_runner generate --pte M.pte --prompt-ids ids.bin [--max-new-tokens 32] [--temperature 0]
//                            [--seed 0] [--ignore-eos] [--dump-logits logits.f32] [--forced-tokens ids.bin]
//                            [--out result.json]
//                            [--threads N] [--cpus 4-7]
//   deltallm_runner info     --pte M.pte
//   deltallm_runner chat     --pte M.pte [--threads N] [--cpus 4-7]   (requests on stdin: chat_server.h)
//   deltallm_runner tokenize --tokenizer tokenizer.json --texts texts.jsonl   (one JSON string a line)
//   deltallm_runner kernel-check --cases cases.bin --out results.bin [--scalar]  (see kernel_check.h)
//
// Prompt ids: a file of little-endian int32 token ids. bench writes its JSON atomically (temp file,
// rename), then the marker <out without .json>.done ("ok"). generate prints its JSON (tokens,
// timings, sparsity) on stdout; --dump-logits writes the last-position logits of every forward
// call as float32 rows; --forced-tokens feeds decode step i the i-th id of a file instead of the
// chosen token (teacher forcing: compare builds call by call on the same context). Exit codes: 0 ok, 2 bad input, 3 run-time failure; one "error: " line.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <deltaattn.h>
#include <executorch/runtime/platform/platform.h>

#include <nlohmann/json.hpp>

#include "bench.h"
#include "chat_server.h"
#include "json_writer.h"
#include "kernel_check.h"
#include "llm_session.h"
#include "tokenizer.h"

namespace {

bool g_verbose = false;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int fail(const dlm::Status& st) {
  std::fprintf(stderr, "error: %s\n", st.message.c_str());
  return st.code;
}

int usage(const std::string& why) {
  std::fprintf(stderr, "error: %s (usage: deltallm_runner bench|generate|chat|info --pte M.pte ...)\n", why.c_str());
  return dlm::kExitBadInput;
}

struct Args {
  std::string command;
  std::map<std::string, std::vector<std::string>> opts;
  bool has(const std::string& k) const { return opts.count(k) > 0; }
  std::string get(const std::string& k, const std::string& dflt = "") const {
    auto it = opts.find(k);
    return it == opts.end() || it->second.empty() ? dflt : it->second.front();
  }
};

const std::map<std::string, int> kArity = {  // -1: one or more values
    {"--pte", 1}, {"--prompt-ids", 1}, {"--out", 1}, {"--prompt-lengths", -1}, {"--decode-lengths", -1},
    {"--warmup", 1}, {"--reps", 1}, {"--threads", 1}, {"--cpus", 1}, {"--max-new-tokens", 1},
    {"--temperature", 1}, {"--seed", 1}, {"--ignore-eos", 0}, {"--dump-logits", 1}, {"--verbose", 0},
    {"--forced-tokens", 1}, {"--tokenizer", 1}, {"--texts", 1}, {"--cases", 1},
    {"--scalar", 0}};

bool parse(int argc, char** argv, Args* a, std::string* err) {
  if (argc < 2) return (*err = "no command"), false;
  a->command = argv[1];
  for (int i = 2; i < argc; i++) {
    const std::string k = argv[i];
    auto it = kArity.find(k);
    if (it == kArity.end()) return (*err = "unknown option " + k), false;
    auto& vals = a->opts[k];
    if (it->second == 0) continue;
    while (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) {
      vals.push_back(argv[++i]);
      if (it->second == 1) break;
    }
    if (vals.empty()) return (*err = k + " needs a value"), false;
  }
  return true;
}

bool to_int(const std::string& s, long long* v) {
  char* end = nullptr;
  *v = std::strtoll(s.c_str(), &end, 10);
  return !s.empty() && end && *end == '\0';
}

dlm::Status int_opt(const Args& a, const std::string& k, long long dflt, long long lo, long long* v) {
  *v = dflt;
  if (!a.has(k)) return dlm::Status::Ok();
  if (!to_int(a.get(k), v) || *v < lo)
    return dlm::Status::BadInput(k + " " + a.get(k) + ": expected an integer >= " + std::to_string(lo));
  return dlm::Status::Ok();
}

dlm::Status int_list(const Args& a, const std::string& k, std::vector<int64_t> dflt, std::vector<int64_t>* out) {
  *out = dflt;
  if (!a.has(k)) return dlm::Status::Ok();
  out->clear();
  for (const auto& s : a.opts.at(k)) {
    long long v = 0;
    if (!to_int(s, &v) || v < 0) return dlm::Status::BadInput(k + " " + s + ": expected integers >= 0");
    out->push_back(v);
  }
  return dlm::Status::Ok();
}

dlm::Status read_ids(const std::string& path, std::vector<int64_t>* ids) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return dlm::Status::BadInput(path + ": cannot open the prompt ids file");
  const auto size = static_cast<size_t>(f.tellg());
  if (size == 0 || size % 4 != 0)
    return dlm::Status::BadInput(path + ": expected little-endian int32 token ids (size " + std::to_string(size) +
                                 " is not a positive multiple of 4)");
  std::vector<int32_t> raw(size / 4);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(size));
  ids->assign(raw.begin(), raw.end());
  return dlm::Status::Ok();
}

// Writes `data` to `path` through a temp file and a rename: never a half-written file.
dlm::Status write_atomic(const std::string& path, const void* data, size_t n) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return dlm::Status::BadInput(path + ": cannot write (" + std::strerror(errno) + ")");
  const bool ok = std::fwrite(data, 1, n, f) == n && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return dlm::Status::Runtime(path + ": write failed (" + std::strerror(errno) + ")");
  }
  return dlm::Status::Ok();
}

std::string done_path(const std::string& out) {
  const std::string ext = ".json";
  if (out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0)
    return out.substr(0, out.size() - ext.size()) + ".done";
  return out + ".done";
}

// Common set-up: affinity first (threads created later inherit it), then threads, then the program.
dlm::Status open_session(const Args& a, std::unique_ptr<dlm::LlmSession>* s, int* threads) {
  if (!a.has("--pte")) return dlm::Status::BadInput("--pte is required");
  if (a.has("--cpus")) {
    dlm::Status st = dlm::SetAffinity(a.get("--cpus"));
    if (!st.ok()) return st;
  }
  long long n = 0;
  dlm::Status st = int_opt(a, "--threads", 0, 0, &n);
  if (!st.ok()) return st;
  *threads = dlm::SetThreads(static_cast<int>(n));
  return dlm::LlmSession::Load(a.get("--pte"), s);
}

int cmd_bench(const Args& a, double t_start) {
  if (!a.has("--out")) return usage("bench needs --out");
  if (!a.has("--prompt-ids")) return usage("bench needs --prompt-ids");
  dlm::BenchOptions opt;
  long long warmup = 1, reps = 3;
  for (dlm::Status st : {int_list(a, "--prompt-lengths", {32}, &opt.prompt_lengths),
                         int_list(a, "--decode-lengths", {16}, &opt.decode_lengths),
                         int_opt(a, "--warmup", 1, 0, &warmup), int_opt(a, "--reps", 3, 1, &reps)})
    if (!st.ok()) return fail(st);
  opt.warmup = static_cast<int>(warmup);
  opt.reps = static_cast<int>(reps);
  opt.cpus = a.get("--cpus");
  std::vector<int64_t> prompt;
  dlm::Status st = read_ids(a.get("--prompt-ids"), &prompt);
  if (!st.ok()) return fail(st);
  std::unique_ptr<dlm::LlmSession> s;
  st = open_session(a, &s, &opt.threads);
  if (!st.ok()) return fail(st);
  opt.startup_ms = now_ms() - t_start;
  std::string json;
  st = dlm::RunBench(*s, prompt, opt, &json);
  if (!st.ok()) return fail(st);
  st = write_atomic(a.get("--out"), json.data(), json.size());
  if (!st.ok()) return fail(st);
  st = write_atomic(done_path(a.get("--out")), "ok\n", 3);
  return st.ok() ? 0 : fail(st);
}

int cmd_generate(const Args& a) {
  if (!a.has("--prompt-ids")) return usage("generate needs --prompt-ids");
  long long max_new = 32, seed = 0;
  dlm::SampleOptions sample;
  // --max-new-tokens counts every generated token: the one the prefill chooses plus N - 1 decode steps.
  for (dlm::Status st : {int_opt(a, "--max-new-tokens", 32, 1, &max_new), int_opt(a, "--seed", 0, 0, &seed)})
    if (!st.ok()) return fail(st);
  sample.seed = static_cast<uint64_t>(seed);
  if (a.has("--temperature")) {
    char* end = nullptr;
    sample.temperature = std::strtof(a.get("--temperature").c_str(), &end);
    if (!end || *end || !(sample.temperature >= 0.0f))
      return fail(dlm::Status::BadInput("--temperature " + a.get("--temperature") + ": expected a number >= 0"));
  }
  std::vector<int64_t> prompt;
  dlm::Status st = read_ids(a.get("--prompt-ids"), &prompt);
  if (!st.ok()) return fail(st);
  std::vector<int64_t> forced;
  if (a.has("--forced-tokens")) {
    st = read_ids(a.get("--forced-tokens"), &forced);
    if (!st.ok()) return fail(st);
  }
  int threads = 0;
  std::unique_ptr<dlm::LlmSession> s;
  st = open_session(a, &s, &threads);
  if (!st.ok()) return fail(st);
  std::vector<int64_t> tokens;
  std::vector<float> dumped;
  const bool dump = a.has("--dump-logits");
  dlm::ResetSparsity();
  dlm::Timings t;
  dlm::GenerateRequest req;
  req.ids = prompt;
  req.max_new_tokens = max_new - 1;
  req.sample = sample;
  req.stop_at_eos = !a.has("--ignore-eos");
  req.forced = a.has("--forced-tokens") ? &forced : nullptr;
  st = s->Generate(req, [&](int64_t tok) { tokens.push_back(tok); return true; },
                   dump ? dlm::LogitsSink([&](const float* l, int64_t v) { dumped.insert(dumped.end(), l, l + v); })
                        : dlm::LogitsSink(),
                   &t);
  if (!st.ok()) return fail(st);
  if (dump) {
    st = write_atomic(a.get("--dump-logits"), dumped.data(), dumped.size() * sizeof(float));
    if (!st.ok()) return fail(st);
  }
  dlm::JsonWriter w;
  w.begin_object();
  w.key("runner").value("native").key("abi").value(dlm::BuildAbi()).key("kernel_arch").value(dlm_kernel_arch());
  w.key("threads").value(threads);
  w.key("prompt_tokens").value(static_cast<long long>(prompt.size()));
  w.key("tokens").begin_array();
  for (int64_t x : tokens) w.value(static_cast<long long>(x));
  w.end_array();
  w.key("load_ms").value(s->load_ms()).key("ttft_ms").value(t.prefill_ms);
  w.key("prefill_tps").value(t.prefill_tps()).key("decode_tps").value(t.decode_tps());
  w.key("peak_rss_mb").value(dlm::PeakRssMb());
  w.key("sparsity").raw(dlm::SparsityJson());
  w.end_object();
  const std::string json = w.str() + "\n";
  if (a.has("--out")) {
    st = write_atomic(a.get("--out"), json.data(), json.size());
    if (!st.ok()) return fail(st);
  }
  std::fwrite(json.data(), 1, json.size(), stdout);
  return 0;
}

int cmd_info(const Args& a) {
  int threads = 0;
  std::unique_ptr<dlm::LlmSession> s;
  dlm::Status st = open_session(a, &s, &threads);
  if (!st.ok()) return fail(st);
  const auto& i = s->info();
  dlm::JsonWriter w;
  w.begin_object();
  w.key("abi").value(dlm::BuildAbi()).key("kernel_arch").value(dlm_kernel_arch()).key("threads").value(threads);
  w.key("vocab_size").value(static_cast<long long>(i.vocab_size));
  w.key("max_seq_len").value(static_cast<long long>(i.max_seq_len));
  w.key("max_context_len").value(static_cast<long long>(i.max_context_len));
  w.key("n_layers").value(static_cast<long long>(i.n_layers));
  w.key("bos_id").value(static_cast<long long>(i.bos_id));
  w.key("eos_ids").begin_array();
  for (int64_t e : i.eos_ids) w.value(static_cast<long long>(e));
  w.end_array();
  w.key("delta_attention").value(i.delta_attention);
  w.key("operators").array(i.operators);
  w.key("load_ms").value(s->load_ms());
  w.end_object();
  std::printf("%s\n", w.str().c_str());
  return 0;
}

// Each input line (a JSON string) -> {"ids": [...], "decoded": "..."}: the device's tokenizer, for
// parity checks against `tokenizers` and for tokenising on a device.
int cmd_tokenize(const Args& a) {
  if (!a.has("--tokenizer") || !a.has("--texts")) return usage("tokenize needs --tokenizer and --texts");
  std::unique_ptr<dlm::Tokenizer> tok;
  dlm::Status st = dlm::Tokenizer::Load(a.get("--tokenizer"), &tok);
  if (!st.ok()) return fail(st);
  std::ifstream f(a.get("--texts"));
  if (!f) return fail(dlm::Status::BadInput(a.get("--texts") + ": cannot open"));
  std::string line;
  for (size_t n = 1; std::getline(f, line); n++) {
    std::string text;
    try {
      text = nlohmann::json::parse(line).get<std::string>();
    } catch (const std::exception&) {
      return fail(dlm::Status::BadInput(a.get("--texts") + ":" + std::to_string(n) + ": not a JSON string"));
    }
    const std::vector<int32_t> ids = tok->Encode(text);
    nlohmann::json out = {{"ids", ids},
                          {"decoded", tok->Decode(ids, false)}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace

// ExecuTorch's log sink: errors only (the runtime's own reasons behind a failed call), all with --verbose.
extern "C" void et_pal_emit_log_message(et_timestamp_t, et_pal_log_level_t level, const char* filename,
                                        const char*, size_t line, const char* message, size_t length) {
  if (!g_verbose && level != kError && level != kFatal) return;
  std::fprintf(stderr, "executorch: %.*s (%s:%zu)\n", static_cast<int>(length), message, filename, line);
}

int main(int argc, char** argv) {
  const double t_start = now_ms();
  Args a;
  std::string err;
  if (argc >= 2 && (std::strcmp(argv[1], "--version") == 0)) {
    std::printf("deltallm_runner %s %s protocol %s\n", dlm::BuildAbi(), dlm_kernel_arch(), dlm::kBenchProtocol);
    return 0;
  }
  if (!parse(argc, argv, &a, &err)) return usage(err);
  g_verbose = a.has("--verbose");
  if (a.command == "bench") return cmd_bench(a, t_start);
  if (a.command == "generate") return cmd_generate(a);
  if (a.command == "info") return cmd_info(a);
  if (a.command == "chat") {
    int threads = 0;
    std::unique_ptr<dlm::LlmSession> s;
    dlm::Status st = open_session(a, &s, &threads);
    if (!st.ok()) return fail(st);
    return dlm::RunChatServer(*s, threads, stdin, stdout);
  }
  if (a.command == "tokenize") return cmd_tokenize(a);
  if (a.command == "kernel-check") {
    if (!a.has("--cases") || !a.has("--out")) return usage("kernel-check needs --cases and --out");
    std::string arch;
    dlm::Status st = dlm::KernelCheck(a.get("--cases"), a.get("--out"), a.has("--scalar"), &arch);
    if (!st.ok()) return fail(st);
    std::printf("%s\n", arch.c_str());
    return 0;
  }
  return usage("unknown command " + a.command);
}
