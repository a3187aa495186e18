#include "router/grpc/executors.h"

namespace ringserve::router {

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

core::Timers::Id TimerThread::At(absl::Time at, std::function<void()> fn) {
  Id id;
  bool first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    timers_.emplace(std::make_pair(at, id), std::move(fn));
    due_[id] = at;
    first = timers_.begin()->first.second == id;
  }
  if (first) cv_.notify_all();
  return id;
}

void TimerThread::Cancel(Id id) {
  if (id == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  auto it = due_.find(id);
  if (it != due_.end()) {
    timers_.erase(std::make_pair(it->second, id));
    due_.erase(it);
    return;
  }
  if (std::this_thread::get_id() == thread_.get_id()) return;
  cv_.wait(lock, [&] { return running_ != id; });
}

void TimerThread::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (timers_.empty()) {
      cv_.wait(lock);
      continue;
    }
    const auto first = timers_.begin();
    const absl::Time now = absl::Now();
    if (first->first.first > now) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(first->first.first - now));
      continue;
    }
    const Id id = first->first.second;
    std::function<void()> fn = std::move(first->second);
    timers_.erase(first);
    due_.erase(id);
    running_ = id;
    lock.unlock();
    fn();
    fn = nullptr;
    lock.lock();
    running_ = 0;
    cv_.notify_all();
  }
}

TaskRunner::TaskRunner(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

void TaskRunner::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void TaskRunner::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      tasks_.push_back(std::move(task));
      cv_.notify_one();
      return;
    }
  }
  task();
}

void TaskRunner::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
    if (tasks_.empty()) return;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;
    lock.lock();
  }
}

}  // namespace ringserve::router
