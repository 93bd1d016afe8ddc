// The core's own task pool, for callers that bring none (the eager PyTorch op, C callers):
// dlm_set_num_threads(n) starts n - 1 workers; the calling thread works too. ExecuTorch callers
// pass their threadpool through dlm_attn_args.parallel and never touch this pool.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "deltaattn.h"
#include "task_pool.h"

namespace {

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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = task;
      ctx_ = ctx;
      n_ = n;
      next_.store(0);
      active_ = workers_.size();
      generation_++;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
  }

 private:
  void drain() {
    for (size_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) task_(ctx_, i);
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    quit_ = false;
  }

  std::mutex run_mutex_;   // one run (or resize) at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  dlm_task_fn task_ = nullptr;
  void* ctx_ = nullptr;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
  size_t active_ = 0;
  uint64_t generation_ = 0;
  bool quit_ = false;
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
