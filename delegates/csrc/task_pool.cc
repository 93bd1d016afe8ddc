// The core's own task pool, for callers that bring none (the eager PyTorch op, C callers):
// dlm_set_num_threads(n) starts n - 1 workers; the calling thread works too. ExecuTorch callers
// pass their threadpool through dlm_attn_args.parallel and never touch this pool.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "deltaattn.h"
#include "task_pool.h"

namespace {

// Workers spin for a while (kSpinNs) before they sleep, and so does the caller waiting for the last
// task: a decode step dispatches one small batch of tasks per layer, ~0.1 ms apart, and waking a
// sleeping thread (futex) costs tens of µs on a virtual machine — a quarter of a step at two
// threads. ExecuTorch's pthreadpool spins in the same way. A spinning thread yields the core's
// pipeline (pause / yield) and gives up after the budget, so an idle pool costs nothing.
class TaskPool {
 public:
  ~TaskPool() { resize(1); }

  int size() {
    std::lock_guard<std::mutex> lock(run_mutex_);
    return static_cast<int>(workers_.size()) + 1;
  }

  void resize(int n) {
    std::lock_guard<std::mutex> run(run_mutex_);
    stop_workers();
    for (int i = 1; i < n; i++) workers_.emplace_back([this] { work(); });
  }

  // Runs task(ctx, i) for i in [0, n) on the workers and the calling thread; returns when all are done.
  void run(size_t n, dlm_task_fn task, void* ctx) {
    std::unique_lock<std::mutex> run(run_mutex_, std::try_to_lock);
    if (!run.owns_lock() || workers_.empty() || n <= 1) {   // busy (a nested or concurrent call): serial
      for (size_t i = 0; i < n; i++) task(ctx, i);
      return;
    }
    task_ = task;
    ctx_ = ctx;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    active_.store(workers_.size(), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);   // a worker going to sleep sees the new generation
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    drain();
    if (!spin_until([this] { return active_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return active_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  static constexpr int64_t kSpinNs = 50000;   // 50 µs: a decode step calls again within a few µs

  static void relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  }

  // Polls ready() for up to kSpinNs; true once it holds.
  template <class F>
  static bool spin_until(F ready) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0;; i++) {
      if (ready()) return true;
      relax();
      if ((i & 255) == 255 && std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(kSpinNs)) return ready();
    }
  }

  void drain() {
    for (size_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) task_(ctx_, i);
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      const auto fresh = [&] {
        return quit_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, fresh);
      }
      if (quit_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      drain();
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);   // the caller may be asleep on done_
        done_.notify_one();
      }
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    quit_.store(false, std::memory_order_release);
  }

  std::mutex run_mutex_;   // one run (or resize) at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  dlm_task_fn task_ = nullptr;   // written before the generation's release, read after its acquire
  void* ctx_ = nullptr;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<size_t> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
};

TaskPool& pool() {
  static TaskPool* p = new TaskPool();   // never destroyed: workers may outlive static destruction order
  return *p;
}

}  // namespace

namespace dlm {

void run_on_task_pool(size_t n, dlm_task_fn task, void* ctx) { pool().run(n, task, ctx); }

}  // namespace dlm

extern "C" {

int dlm_set_num_threads(int n) {
  if (n < 1 || n > 256) return DLM_ERR_INVALID;
  if (n != pool().size()) pool().resize(n);
  return DLM_OK;
}

int dlm_get_num_threads(void) { return pool().size(); }

}  // extern "C"
