#include "prefill_worker/scheduler.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::prefill {
namespace {

constexpr absl::Duration kWait = absl::Seconds(60);

// Records what the scheduler reports for one job.
class FakeSink final : public PrefillSink {
 public:
  void Progress(size_t done, size_t total) override {
    absl::MutexLock lock(&mu_);
    progress_.emplace_back(done, total);
  }
  void Finished(const PrefillOutcome& outcome) override {
    absl::MutexLock lock(&mu_);
    outcome_ = outcome;
  }
  bool Cancelled() override { return false; }

  std::optional<PrefillOutcome> WaitForOutcome() {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return outcome_.has_value(); };
    mu_.AwaitWithTimeout(absl::Condition(&ended), kWait);
    return outcome_;
  }
  std::vector<std::pair<size_t, size_t>> progress() {
    absl::MutexLock lock(&mu_);
    return progress_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<size_t, size_t>> progress_ ABSL_GUARDED_BY(mu_);
  std::optional<PrefillOutcome> outcome_ ABSL_GUARDED_BY(mu_);
};

class PrefillSchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = state::testing::LoadTinyModel().release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  std::unique_ptr<PrefillJob> Job(std::shared_ptr<FakeSink> sink) {
    auto job = std::make_unique<PrefillJob>();
    job->request_id = "r";
    for (int i = 0; i < 12; ++i) job->tokens.push_back(3 + i);
    job->sampling.temperature = 0;
    job->sampling.position = 12;
    job->decode_address = "unused";
    job->ticket = "t";
    job->progress = true;
    job->sink = std::move(sink);
    job->enqueued = absl::Now();
    return job;
  }

  static state::testing::TinyModel* model_;
};

state::testing::TinyModel* PrefillSchedulerTest::model_ = nullptr;

TEST_F(PrefillSchedulerTest, ReportsProgressThenTheFirstToken) {
  PrefillScheduler::Options options;
  options.chunk_tokens = 4;
  int64_t sent_tokens = -1;
  PrefillScheduler scheduler(model_->model.get(), options, [&](const PrefillJob& job) {
    sent_tokens = job.state->position();
    return absl::OkStatus();
  });
  scheduler.Start();
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(scheduler.Submit(Job(sink)).ok());
  const std::optional<PrefillOutcome> outcome = sink->WaitForOutcome();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->status.ok()) << outcome->status;
  EXPECT_EQ(sent_tokens, 12);
  const auto progress = sink->progress();
  ASSERT_EQ(progress.size(), 2u);  // after chunks 1 and 2; the last chunk ends in the outcome
  EXPECT_EQ(progress[0], std::make_pair(size_t{4}, size_t{12}));
  EXPECT_EQ(progress[1], std::make_pair(size_t{8}, size_t{12}));
  EXPECT_GE(outcome->first_token, 0);
  EXPECT_LT(outcome->first_token, model_->config().vocab_size);
}

TEST_F(PrefillSchedulerTest, ReportsAFailedTransferAsItsStatus) {
  PrefillScheduler scheduler(model_->model.get(), {}, [](const PrefillJob&) {
    return absl::UnavailableError("decode worker gone");
  });
  scheduler.Start();
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(scheduler.Submit(Job(sink)).ok());
  const std::optional<PrefillOutcome> outcome = sink->WaitForOutcome();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace ringserve::prefill
