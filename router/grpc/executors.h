#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "router/core/timers.h"

namespace ringserve::router {

// Real time and one thread that runs every timer of the router. Callbacks must be short (they
// post to a flow). Cancel of a timer whose callback is running on the timer thread waits for it
// (unless called from that callback), so an owner may destroy what its callback touches after
// Cancel returns. Thread-safe.
class TimerThread : public core::Timers {
 public:
  TimerThread();
  // Drops the timers that have not fired and joins the thread.
  ~TimerThread() override;

  absl::Time Now() const override { return absl::Now(); }
  Id At(absl::Time at, std::function<void()> fn) override;
  void Cancel(Id id) override;

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<absl::Time, Id>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<Id, absl::Time> due_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  Id running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// A fixed set of threads for work that may block or take CPU time (tokenizing a long prompt,
// resolving DNS), so the threads that carry events never do. Tasks run in order of posting.
// Thread-safe.
class TaskRunner {
 public:
  explicit TaskRunner(int threads);
  ~TaskRunner() { Stop(); }
  // Runs the tasks already posted, then joins the threads; later tasks run on their poster.
  void Stop();
  void Post(std::function<void()> task);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ringserve::router
