// The host's read bandwidth, the memory side of a decode kernel's roofline: THREADS threads each sum
// their share of an MB-megabyte buffer (64-bit loads, four independent sums the compiler widens to
// vectors), REPS times; prints the best pass as JSON {"gb_per_s", "mb", "threads"}.
//
//   membw MB THREADS REPS
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

uint64_t sum_range(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; i++) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: membw MB THREADS REPS\n");
    return 2;
  }
  const long mb = std::atol(argv[1]), threads = std::atol(argv[2]), reps = std::atol(argv[3]);
  if (mb < 1 || threads < 1 || threads > 256 || reps < 1) {
    std::fprintf(stderr, "membw: MB, THREADS (1..256) and REPS must be positive\n");
    return 2;
  }
  const size_t n = static_cast<size_t>(mb) * (1 << 20) / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;   // touched: every page is mapped
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  for (long r = 0; r <= reps; r++) {   // pass 0 warms up
    std::vector<std::thread> pool;
    const auto t0 = std::chrono::steady_clock::now();
    for (long t = 0; t < threads; t++) {
      pool.emplace_back([&, t] {
        const size_t lo = n * t / threads, hi = n * (t + 1) / threads;
        sink += sum_range(buf.data() + lo, hi - lo);
      });
    }
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s / 1e9);
  }
  std::printf("{\"gb_per_s\": %.3f, \"mb\": %ld, \"threads\": %ld, \"check\": %llu}\n", best, mb, threads,
              static_cast<unsigned long long>(sink.load() & 1));
  return 0;
}
