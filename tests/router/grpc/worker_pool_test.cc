// The router's worker pool against in-process decode services on port 0: every worker is polled
// at once, and a refresh asked for while a poll is in flight joins it.
#include "router/grpc/worker_pool.h"

#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/rpc/server.h"
#include "gtest/gtest.h"

namespace ringserve::router {
namespace {

// A decode service whose GetStatus answers only when the test opens its gate. Thread-safe.
class GatedDecode final : public internal::v1::Decode::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const internal::v1::StatusRequest*,
                                      internal::v1::WorkerStatus* response) override {
    response->set_ready(true);
    response->set_epoch(7);
    auto* reactor = ctx->DefaultReactor();
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_;
    if (open_) {
      reactor->Finish(grpc::Status::OK);
    } else {
      held_.push_back(reactor);
    }
    cv_.notify_all();
    return reactor;
  }

  // Waits (bounded) until `n` calls have arrived.
  bool WaitForCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return calls_ >= n; });
  }
  void Open() {
    std::vector<grpc::ServerUnaryReactor*> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
      held.swap(held_);
    }
    for (auto* r : held) r->Finish(grpc::Status::OK);
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  bool open_ = false;
  std::vector<grpc::ServerUnaryReactor*> held_;
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      auto server = rpc::GrpcServer::Start("127.0.0.1", 0, {}, false, {&services_[i]});
      ASSERT_TRUE(server.ok()) << server.status();
      targets_.push_back(absl::StrCat("127.0.0.1:", (*server)->port()));
      servers_.push_back(std::move(*server));
    }
    WorkerPool::Options options;
    options.role = "decode";
    options.targets = targets_;
    options.rpc_timeout = absl::Seconds(10);
    auto pool = WorkerPool::Create(options, &timers_, &blocking_);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }
  void TearDown() override {
    for (auto& s : services_) s.Open();
    pool_.reset();
  }

  // Waits (bounded) until `count` callbacks ran.
  bool WaitDone(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return done_ >= count; });
  }
  std::function<void()> CountDone() {
    return [this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_;
      cv_.notify_all();
    };
  }

  GatedDecode services_[2];
  std::vector<std::unique_ptr<rpc::GrpcServer>> servers_;
  std::vector<std::string> targets_;
  TimerThread timers_;
  TaskRunner blocking_{1};
  std::unique_ptr<WorkerPool> pool_;
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
};

TEST_F(WorkerPoolTest, PollsEveryWorkerAtOnce) {
  pool_->RefreshNow(CountDone());
  // Both status calls are in flight before either is answered.
  ASSERT_TRUE(services_[0].WaitForCalls(1));
  ASSERT_TRUE(services_[1].WaitForCalls(1));
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(done_, 0);
  }
  services_[0].Open();
  services_[1].Open();
  ASSERT_TRUE(WaitDone(1));
  for (const core::WorkerView& w : pool_->Snapshot()) {
    EXPECT_TRUE(w.healthy) << w.address;
    EXPECT_EQ(w.epoch, 7u);
    EXPECT_NE(w.last_seen, absl::InfinitePast());
  }
}

TEST_F(WorkerPoolTest, ARefreshAskedForDuringAPollJoinsIt) {
  pool_->RefreshNow(CountDone());
  ASSERT_TRUE(services_[0].WaitForCalls(1));
  ASSERT_TRUE(services_[1].WaitForCalls(1));
  pool_->RefreshNow(CountDone());
  pool_->RefreshNow(CountDone());
  services_[0].Open();
  services_[1].Open();
  ASSERT_TRUE(WaitDone(3));
  EXPECT_EQ(services_[0].calls(), 1);
  EXPECT_EQ(services_[1].calls(), 1);
}

TEST_F(WorkerPoolTest, AReportedFailureHoldsUntilTheNextPoll) {
  services_[0].Open();
  services_[1].Open();
  pool_->RefreshAndWait();
  pool_->ReportFailure(targets_[0], "stream silent");
  for (const core::WorkerView& w : pool_->Snapshot()) {
    EXPECT_EQ(w.healthy, w.address != targets_[0]) << w.address;
  }
  pool_->RefreshAndWait();
  for (const core::WorkerView& w : pool_->Snapshot()) EXPECT_TRUE(w.healthy) << w.address;
}

}  // namespace
}  // namespace ringserve::router
