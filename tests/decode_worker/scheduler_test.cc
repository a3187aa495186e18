#include "decode_worker/scheduler.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/base/clock.h"
#include "gtest/gtest.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::decode {
namespace {

constexpr absl::Duration kWait = absl::Seconds(60);

// Records what the scheduler reports; the test decides whether it has room.
class FakeSink final : public SequenceSink {
 public:
  bool HasRoom() override {
    absl::MutexLock lock(&mu_);
    ++room_checks_;
    return room_;
  }
  void Token(int32_t token) override {
    absl::MutexLock lock(&mu_);
    tokens_.push_back(token);
  }
  void Finished(const SequenceEnd& end) override {
    absl::MutexLock lock(&mu_);
    end_ = end;
  }
  bool Cancelled() override { return false; }

  void set_room(bool room) {
    absl::MutexLock lock(&mu_);
    room_ = room;
  }
  // Waits until HasRoom was asked `n` times in all.
  bool WaitForRoomChecks(int n) {
    absl::MutexLock lock(&mu_);
    auto asked = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return room_checks_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&asked), kWait);
  }
  std::optional<SequenceEnd> WaitForEnd() {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return end_.has_value(); };
    mu_.AwaitWithTimeout(absl::Condition(&ended), kWait);
    return end_;
  }
  size_t tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_.size();
  }

 private:
  absl::Mutex mu_;
  bool room_ ABSL_GUARDED_BY(mu_) = true;
  int room_checks_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int32_t> tokens_ ABSL_GUARDED_BY(mu_);
  std::optional<SequenceEnd> end_ ABSL_GUARDED_BY(mu_);
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = state::testing::LoadTinyModel().release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  // A prefilled sequence of a short prompt that decodes up to `max_tokens` with `sink`.
  ReadySequence Sequence(const std::string& id, int64_t max_tokens,
                         std::shared_ptr<FakeSink> sink) {
    const std::vector<int32_t> prompt = {5, 6, 7, 8};
    auto state = model_->model->NewState(static_cast<int64_t>(prompt.size()) + max_tokens);
    EXPECT_TRUE(state.ok()) << state.status();
    EXPECT_TRUE(
        model_->model->Prefill(prompt, state->get(), 64, model::LogitsMode::kNone, nullptr).ok());
    ReadySequence seq;
    seq.request_id = id;
    seq.state = std::move(*state);
    seq.first_token = 9;
    seq.options.max_tokens = max_tokens;
    seq.options.ignore_eos = true;
    seq.options.sampling.temperature = 0;
    seq.sink = std::move(sink);
    seq.on_finish = [this] { finished_.Notify(); };
    return seq;
  }

  // Submits a sequence whose sink has no room and waits until the scheduler has paused it.
  std::shared_ptr<FakeSink> SubmitPaused(Scheduler& scheduler, int64_t max_tokens) {
    auto sink = std::make_shared<FakeSink>();
    sink->set_room(false);
    scheduler.Submit(Sequence("a", max_tokens, sink));
    EXPECT_TRUE(sink->WaitForRoomChecks(1));
    return sink;
  }

  // Returns once the loop has gone round after what it was doing (its counts are current).
  static void WaitForLoop(Scheduler& scheduler) {
    absl::Notification ran;
    scheduler.PostAdmission([&](const absl::Status&) { ran.Notify(); });
    EXPECT_TRUE(ran.WaitForNotificationWithTimeout(kWait));
  }

  Scheduler::Options Options() {
    Scheduler::Options o;
    o.max_batch = 4;
    o.stall_timeout = absl::Seconds(10);
    o.clock = &clock_;
    return o;
  }

  static state::testing::TinyModel* model_;
  base::FakeClock clock_;
  absl::Notification finished_;
};

state::testing::TinyModel* SchedulerTest::model_ = nullptr;

TEST_F(SchedulerTest, DecodesToMaxTokens) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  auto sink = std::make_shared<FakeSink>();
  scheduler.Submit(Sequence("a", 6, sink));
  const std::optional<SequenceEnd> end = sink->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->reason, FinishReason::kLength);
  EXPECT_TRUE(end->status.ok());
  EXPECT_EQ(end->completion_tokens, 6);
  EXPECT_EQ(sink->tokens(), 5u);  // the first token came from prefill
  EXPECT_TRUE(finished_.WaitForNotificationWithTimeout(kWait));
}

TEST_F(SchedulerTest, PausesWhileItsSinkIsFullAndResumesWhenWoken) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  auto sink = SubmitPaused(scheduler, 6);
  scheduler.Wake();
  ASSERT_TRUE(sink->WaitForRoomChecks(2));  // the loop went round once more: counts are current
  SchedulerStats stats = scheduler.stats();
  EXPECT_EQ(stats.paused, 1u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(sink->tokens(), 0u);
  EXPECT_FALSE(finished_.HasBeenNotified());

  sink->set_room(true);
  scheduler.Wake();
  const std::optional<SequenceEnd> end = sink->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->reason, FinishReason::kLength);
  EXPECT_EQ(sink->tokens(), 5u);
  WaitForLoop(scheduler);
  stats = scheduler.stats();
  EXPECT_EQ(stats.paused, 0u);
  EXPECT_EQ(stats.stalled, 0u);
}

TEST_F(SchedulerTest, EndsASequenceWhoseSinkStaysFullAndFreesIt) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  auto sink = SubmitPaused(scheduler, 100);
  clock_.Advance(absl::Seconds(9));
  scheduler.Wake();
  ASSERT_TRUE(sink->WaitForRoomChecks(2));
  EXPECT_FALSE(finished_.HasBeenNotified());  // not yet past the timeout

  clock_.Advance(absl::Seconds(2));
  scheduler.Wake();
  const std::optional<SequenceEnd> end = sink->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->reason, FinishReason::kStalled);
  EXPECT_EQ(end->status.code(), absl::StatusCode::kDeadlineExceeded) << end->status;
  EXPECT_TRUE(finished_.WaitForNotificationWithTimeout(kWait));  // the reservation is freed
  WaitForLoop(scheduler);
  const SchedulerStats stats = scheduler.stats();
  EXPECT_EQ(stats.paused, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(stats.stalled, 1u);
}

TEST_F(SchedulerTest, CancelEndsAPausedSequence) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  auto sink = SubmitPaused(scheduler, 100);
  scheduler.Cancel("a");
  const std::optional<SequenceEnd> end = sink->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->reason, FinishReason::kCancelled);
  EXPECT_TRUE(finished_.WaitForNotificationWithTimeout(kWait));
}

TEST_F(SchedulerTest, AdmissionsRunOnTheSchedulerThreadAndFailOnceStopped) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  absl::Notification ran;
  std::thread::id thread;
  absl::Status status = absl::UnknownError("not run");
  scheduler.PostAdmission([&](const absl::Status& s) {
    thread = std::this_thread::get_id();
    status = s;
    ran.Notify();
  });
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(kWait));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_NE(thread, std::this_thread::get_id());

  scheduler.Stop();
  absl::Status after = absl::OkStatus();
  scheduler.PostAdmission([&](const absl::Status& s) { after = s; });
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, AdmissionsRunWhileASequenceIsPaused) {
  Scheduler scheduler(model_->model.get(), Options());
  scheduler.Start();
  auto sink = SubmitPaused(scheduler, 100);
  WaitForLoop(scheduler);  // an admission runs although no step does
}

}  // namespace
}  // namespace ringserve::decode
