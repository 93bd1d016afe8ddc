#include "bench.h"

#include <deltaattn.h>

#include "json_writer.h"

namespace dlm {

namespace {

struct Totals {
  unsigned long long zeros = 0, elements = 0, performed = 0, dense = 0;
  void add(const dlm_counts& c) {
    zeros += c.dk_zeros;
    elements += c.dk_elements;
    performed += c.macs_performed;
    dense += c.macs_dense;
  }
  void write(JsonWriter& w) const {
    w.begin_object();
    w.key("s_m").value(elements ? static_cast<double>(zeros) / elements : 0.0);
    w.key("s_c").value(dense ? 1.0 - static_cast<double>(performed) / dense : 0.0);
    w.key("macs_performed").value(performed);
    w.key("macs_dense").value(dense);
    w.end_object();
  }
};

}  // namespace

void ResetSparsity() { dlm_stats_reset(); }

std::string SparsityJson() {
  const int64_t layers = dlm_stats_num_layers();
  if (layers <= 0) return "null";
  JsonWriter w;
  Totals all;
  w.begin_object();
  const char* phases[2] = {"prefill", "decode"};
  for (int phase = 0; phase < 2; phase++) {
    Totals tot;
    JsonWriter lw;
    lw.begin_array();
    for (int64_t l = 0; l < layers; l++) {
      dlm_counts c{};
      if (dlm_stats_read(l, phase, &c) != DLM_OK || c.calls == 0) continue;
      tot.add(c);
      lw.begin_object();
      lw.key("dk_zeros").value(static_cast<unsigned long long>(c.dk_zeros));
      lw.key("dk_elements").value(static_cast<unsigned long long>(c.dk_elements));
      lw.key("macs_performed").value(static_cast<unsigned long long>(c.macs_performed));
      lw.key("macs_dense").value(static_cast<unsigned long long>(c.macs_dense));
      lw.key("layer").value(static_cast<long long>(l));
      lw.key("phase").value(phases[phase]);
      lw.key("calls").value(static_cast<unsigned long long>(c.calls));
      lw.key("s_m").value(c.dk_elements ? static_cast<double>(c.dk_zeros) / c.dk_elements : 0.0);
      lw.key("s_c").value(c.macs_dense ? 1.0 - static_cast<double>(c.macs_performed) / c.macs_dense : 0.0);
      lw.end_object();
    }
    lw.end_array();
    all.zeros += tot.zeros;
    all.elements += tot.elements;
    all.performed += tot.performed;
    all.dense += tot.dense;
    w.key(phases[phase]).begin_object();
    w.key("total");
    tot.write(w);
    w.key("layers").raw(lw.str());
    w.end_object();
  }
  w.key("all");
  all.write(w);
  w.end_object();
  return w.str();
}

Status RunBench(LlmSession& session, const std::vector<int64_t>& prompt, const BenchOptions& opt,
                std::string* json) {
  for (int64_t p : opt.prompt_lengths) {
    if (p < 1) return Status::BadInput("prompt lengths must be >= 1");
    if (p > static_cast<int64_t>(prompt.size()))
      return Status::BadInput("prompt length " + std::to_string(p) + " needs " + std::to_string(p) +
                              " prompt ids; the prompt file has " + std::to_string(prompt.size()));
    for (int64_t d : opt.decode_lengths) {
      if (d < 0) return Status::BadInput("decode lengths must be >= 0");
      Status st = session.CheckPrompt(std::vector<int64_t>(prompt.begin(), prompt.begin() + p), d);
      if (!st.ok()) return st;
    }
  }
  JsonWriter w;
  w.begin_object();
  w.key("protocol").value(kBenchProtocol);
  w.key("runner").value(opt.runner);
  w.key("abi").value(BuildAbi());
  w.key("kernel_arch").value(dlm_kernel_arch());
  w.key("load_ms").value(session.load_ms());
  w.key("startup_ms").value(opt.startup_ms);
  w.key("threads").value(opt.threads);
  w.key("cpus").value(opt.cpus);
  w.key("configs").begin_array();
  const SampleOptions greedy;
  for (int64_t p : opt.prompt_lengths) {
    const std::vector<int64_t> ids(prompt.begin(), prompt.begin() + p);
    for (int64_t d : opt.decode_lengths) {
      std::vector<double> ttft, prefill_tps, decode_tps;
      std::string sparsity = "null";
      for (int rep = 0; rep < opt.warmup + opt.reps; rep++) {
        const bool measured = rep >= opt.warmup;
        if (measured && rep == opt.warmup) ResetSparsity();
        Timings t;
        // Decode exactly d steps (no EOS stop): every repetition does the same work.
        GenerateRequest req;
        req.ids = ids;
        req.max_new_tokens = d;
        req.sample = greedy;
        req.stop_at_eos = false;
        req.reuse = false;   // every repetition is a fresh sequence from position 0
        Status st = session.Generate(req, nullptr, nullptr, &t);
        if (!st.ok()) return st;
        if (!measured) continue;
        ttft.push_back(t.prefill_ms);
        prefill_tps.push_back(t.prefill_tps());
        decode_tps.push_back(d ? t.decode_tps() : 0.0);
        if (rep == opt.warmup) sparsity = SparsityJson();
      }
      w.begin_object();
      w.key("prompt_tokens").value(static_cast<long long>(p));
      w.key("decode_tokens").value(static_cast<long long>(d));
      w.key("samples").begin_object();
      w.key("ttft_ms").array(ttft);
      w.key("prefill_tps").array(prefill_tps);
      w.key("decode_tps").array(decode_tps);
      w.end_object();
      w.key("sparsity").raw(sparsity);
      w.end_object();
    }
  }
  w.end_array();
  w.key("peak_rss_mb").value(PeakRssMb());
  w.end_object();
  *json = w.str();
  return Status::Ok();
}

}  // namespace dlm
