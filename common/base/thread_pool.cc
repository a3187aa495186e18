#include "common/base/thread_pool.h"

#include <algorithm>

namespace ringserve::base {

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads > 0 ? num_threads
                                   : std::max(1u, std::thread::hardware_concurrency())) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {
void BlockRange(int64_t n, int blocks, int index, int64_t* begin, int64_t* end) {
  *begin = n * index / blocks;
  *end = n * (index + 1) / blocks;
}
}  // namespace

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t max_blocks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int blocks = static_cast<int>(std::min<int64_t>(num_threads_, max_blocks));
  if (blocks <= 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    blocks_ = blocks;
    pending_ = blocks - 1;
    ++generation_;
  }
  work_cv_.notify_all();
  int64_t begin, end;
  BlockRange(n, blocks, 0, &begin, &end);
  fn(begin, end);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n;
    int blocks;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index >= blocks_) continue;
      fn = fn_;
      n = n_;
      blocks = blocks_;
    }
    int64_t begin, end;
    BlockRange(n, blocks, index, &begin, &end);
    (*fn)(begin, end);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace ringserve::base
