// The router's timer thread and task runner.
#include "router/grpc/executors.h"

#include <condition_variable>
#include <mutex>
#include <vector>

#include "gtest/gtest.h"

namespace ringserve::router {
namespace {

// Collects values from any thread; Wait blocks (bounded) until `n` have arrived.
class Collector {
 public:
  void Add(int v) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(v);
    cv_.notify_all();
  }
  std::vector<int> Wait(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(10), [&] { return values_.size() >= n; }));
    return values_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> values_;
};

TEST(TimerThreadTest, FiresInOrderOfDueTimeAndNotWhenCancelled) {
  TimerThread timers;
  Collector fired;
  const absl::Time now = timers.Now();
  // Due times far apart, so that a slow test thread cannot reorder them.
  timers.At(now + absl::Milliseconds(400), [&] { fired.Add(3); });
  const auto cancelled = timers.At(now + absl::Hours(1), [&] { fired.Add(-1); });
  timers.At(now + absl::Milliseconds(200), [&] { fired.Add(2); });
  timers.At(now - absl::Seconds(1), [&] { fired.Add(1); });  // already due
  timers.Cancel(cancelled);
  timers.Cancel(0);  // no timer: a no-op
  EXPECT_EQ(fired.Wait(3), (std::vector<int>{1, 2, 3}));
}

TEST(TimerThreadTest, ATimerMayCancelItselfAndScheduleAnother) {
  TimerThread timers;
  Collector fired;
  core::Timers::Id first = 0;
  std::mutex mu;
  {
    std::lock_guard<std::mutex> lock(mu);
    first = timers.At(timers.Now(), [&] {
      std::lock_guard<std::mutex> lock(mu);
      timers.Cancel(first);  // from the timer thread: returns at once
      timers.At(timers.Now(), [&] { fired.Add(2); });
      fired.Add(1);
    });
  }
  EXPECT_EQ(fired.Wait(2), (std::vector<int>{1, 2}));
}

TEST(TaskRunnerTest, RunsEveryPostedTaskAndInlineAfterStop) {
  TaskRunner runner(2);
  Collector ran;
  for (int i = 0; i < 10; ++i) runner.Post([&ran, i] { ran.Add(i); });
  EXPECT_EQ(ran.Wait(10).size(), 10u);
  runner.Stop();
  runner.Post([&ran] { ran.Add(10); });  // runs here, at once
  EXPECT_EQ(ran.Wait(11).back(), 10);
}

}  // namespace
}  // namespace ringserve::router
