// The router core's request state machine with fake workers, a fake client and fake time: no
// processes, no threads, no sleeps.
#include "router/core/request_flow.h"

#include "common/base/logging.h"
#include "common/cache/prefix_tree.h"
#include "gtest/gtest.h"
#include "tests/router/core/fakes.h"

namespace ringserve::router::core::testing {
namespace {

using internal::v1::DecodeEvent;
using internal::v1::PrefillEvent;
using State = RequestFlow::State;

PrefillEvent Progress(uint32_t done, uint32_t total) {
  PrefillEvent e;
  e.mutable_progress()->set_tokens_done(done);
  e.mutable_progress()->set_tokens_total(total);
  return e;
}

PrefillEvent Done(uint32_t first_token) {
  PrefillEvent e;
  e.mutable_done()->set_first_token(first_token);
  return e;
}

DecodeEvent Tokens(std::vector<uint32_t> ids) {
  DecodeEvent e;
  for (uint32_t t : ids) e.mutable_tokens()->add_token_ids(t);
  return e;
}

DecodeEvent Finished(ringserve::v1::FinishReason reason) {
  DecodeEvent e;
  e.mutable_finished()->set_reason(reason);
  return e;
}

class RequestFlowTest : public ::testing::Test {
 protected:
  RequestFlowTest() : prefill_("prefill", {"p0", "p1"}), decode_("decode", {"d0", "d1"}) {
    base::SetLogLevel(base::LogLevel::kWarning);
    env_.options.limits.vocab_size = 1000;
    env_.options.limits.max_context = 4096;
    env_.options.limits.max_new_tokens = 1024;
    env_.options.queue_timeout = absl::Seconds(30);
    env_.options.worker_timeout = absl::Seconds(10);
    env_.options.client_timeout = absl::Seconds(30);
    env_.options.client_queue = 4;
    env_.prefill = &prefill_;
    env_.decode = &decode_;
    env_.policy = &policy_;
    env_.workers = &workers_;
    env_.timers = &timers_;
    env_.queue = &queue_;
    env_.observer = &observer_;
  }
  // A flow still running when a test ends holds itself through its worker streams and timers
  // until it finishes; its client going away finishes it.
  ~RequestFlowTest() override {
    for (const auto& flow : flows_) flow->OnClientCancelled();
  }

  static ringserve::v1::GenerateRequest Request(uint32_t max_tokens = 8, bool progress = false) {
    ringserve::v1::GenerateRequest r;
    for (uint32_t t : {5u, 6u, 7u}) r.mutable_token_ids()->add_ids(t);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_sampling()->set_seed(42);
    r.set_prefill_progress(progress);
    return r;
  }

  // Starts a request; its client is clients_.back().
  std::shared_ptr<RequestFlow> Start(ringserve::v1::GenerateRequest request = Request(),
                                     absl::Duration deadline = absl::InfiniteDuration()) {
    clients_.push_back(std::make_shared<FakeClient>());
    const absl::Time d =
        deadline == absl::InfiniteDuration() ? absl::InfiniteFuture() : timers_.Now() + deadline;
    auto flow = RequestFlow::Create(&env_, "req-" + std::to_string(clients_.size()),
                                    std::move(request), clients_.back(), d);
    clients_.back()->flow = flow.get();
    flows_.push_back(flow);
    flow->Start();
    return flow;
  }

  FakeClient& client(size_t i = 0) { return *clients_.at(i); }

  // Reserve answered, prefill done with token 100: the flow is decoding.
  std::shared_ptr<RequestFlow> StartDecoding(ringserve::v1::GenerateRequest request = Request()) {
    auto flow = Start(std::move(request));
    workers_.AnswerReserve("t1");
    EXPECT_TRUE(workers_.prefills.back()->Send(Done(100)));
    EXPECT_EQ(flow->state(), State::kDecoding);
    return flow;
  }

  // Every reservation made was released or ended by its worker, exactly once.
  void ExpectReleasedOnce(const std::string& ticket) {
    int n = 0;
    for (const auto& r : workers_.released) n += r.ticket == ticket ? 1 : 0;
    EXPECT_EQ(n, 1) << ticket;
  }

  FakeDirectory prefill_;
  FakeDirectory decode_;
  LoadPolicy policy_;
  FakeWorkerClient workers_;
  FakeTimers timers_;
  AdmissionQueue queue_;
  CountingObserver observer_;
  FlowEnv env_;
  std::vector<std::shared_ptr<FakeClient>> clients_;
  std::vector<std::shared_ptr<RequestFlow>> flows_;
};

// ---- The undisturbed path ----

TEST_F(RequestFlowTest, StreamsTheFirstTokenThenDecodeTokensThenFinishes) {
  auto flow = Start();
  EXPECT_EQ(flow->state(), State::kReserving);
  ASSERT_EQ(workers_.reserves.size(), 1u);
  EXPECT_EQ(workers_.reserves[0].request.prompt_tokens(), 3u);
  EXPECT_EQ(workers_.reserves[0].request.max_tokens(), 8u);
  const std::string decode = workers_.AnswerReserve("t1");
  ASSERT_EQ(workers_.decodes.size(), 1u);
  ASSERT_EQ(workers_.prefills.size(), 1u);
  EXPECT_EQ(workers_.prefill_requests[0].decode_address(), decode);
  EXPECT_EQ(workers_.prefill_requests[0].ticket(), "t1");
  EXPECT_EQ(workers_.prefill_requests[0].sample_position(), 3u);
  EXPECT_EQ(flow->state(), State::kPrefilling);
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  EXPECT_EQ(flow->state(), State::kDecoding);
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({101, 102})));
  ASSERT_TRUE(workers_.decodes[0]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  EXPECT_EQ(flow->state(), State::kFinished);
  EXPECT_TRUE(client().status.ok());
  EXPECT_EQ(client().Tokens(), (std::vector<uint32_t>{100, 101, 102}));
  ASSERT_NE(client().Finished(), nullptr);
  EXPECT_EQ(client().Finished()->reason(), ringserve::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(client().Finished()->usage().completion_tokens(), 3u);
  // The worker ended the sequence itself: nothing to release.
  EXPECT_TRUE(workers_.released.empty());
  EXPECT_EQ(observer_.outcomes, std::vector<std::string>{"length"});
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(RequestFlowTest, TheCacheSaltGoesToEveryPrefillAndUsageCountsTheCachedTokens) {
  auto request = Request();
  request.set_cache_salt("tenant-7");
  Start(std::move(request));
  workers_.AnswerReserve("t1");
  ASSERT_EQ(workers_.prefill_requests.size(), 1u);
  EXPECT_EQ(workers_.prefill_requests[0].cache_salt(), "tenant-7");
  // The first prefill fails: the retry carries the salt too.
  workers_.prefills[0]->End(absl::UnavailableError("prefill worker died"));
  workers_.AnswerReserve("t2");
  ASSERT_EQ(workers_.prefill_requests.size(), 2u);
  EXPECT_EQ(workers_.prefill_requests[1].cache_salt(), "tenant-7");
  PrefillEvent done = Done(100);
  done.mutable_done()->set_cached_tokens(2);
  ASSERT_TRUE(workers_.prefills[1]->Send(done));
  // A migration's prefill carries it as well; usage counts the prefill decoded from.
  workers_.decodes[1]->End(absl::UnavailableError("decode died"));
  workers_.AnswerReserve("t3");
  ASSERT_EQ(workers_.prefill_requests.size(), 3u);
  EXPECT_EQ(workers_.prefill_requests[2].cache_salt(), "tenant-7");
  done.mutable_done()->set_cached_tokens(3);
  ASSERT_TRUE(workers_.prefills[2]->Send(done));
  ASSERT_TRUE(workers_.decodes[2]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  ASSERT_NE(client().Finished(), nullptr);
  EXPECT_EQ(client().Finished()->usage().cached_prompt_tokens(), 3u);
  EXPECT_EQ(client().Finished()->usage().prompt_tokens(), 3u);
}

TEST_F(RequestFlowTest, APromptGoesToTheWorkerHoldingItsPrefixWithTheSalt) {
  PrefixPolicy prefix(PrefixPolicyOptions{});
  env_.policy = &prefix;
  ringserve::v1::GenerateRequest request = Request();
  request.mutable_token_ids()->clear_ids();
  std::vector<int32_t> ids;
  for (int i = 0; i < 150; ++i) {
    ids.push_back(i + 1);
    request.mutable_token_ids()->add_ids(static_cast<uint32_t>(i + 1));
  }
  request.set_cache_salt("s");
  // p1 reports the prompt's first two pages under salt "s".
  auto* summary = prefill_.views()[1].status.mutable_prefix_cache();
  summary->set_page_tokens(64);
  summary->add_prefix_hashes(cache::PrefixHashes("s", ids, 64)[1]);
  Start(std::move(request));
  workers_.AnswerReserve("t1");
  ASSERT_EQ(workers_.prefills.size(), 1u);
  EXPECT_EQ(workers_.prefills[0]->address, "p1");
  EXPECT_EQ(observer_.routes, std::vector<RouteReason>{RouteReason::kCacheHit});
  // The worker's queue grows by the tokens it will compute.
  EXPECT_EQ(prefill_.assigned, (std::vector<std::pair<std::string, int64_t>>{{"p1", 150 - 128}}));
}

TEST_F(RequestFlowTest, TheDecodeStreamIsReadOnlyAfterPrefillReturnedTheFirstToken) {
  Start();
  workers_.AnswerReserve("t1");
  EXPECT_EQ(workers_.decodes[0]->reads, 0);
  EXPECT_FALSE(workers_.decodes[0]->Send(Tokens({101})));
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  EXPECT_EQ(workers_.decodes[0]->reads, 1);
}

TEST_F(RequestFlowTest, ProgressReachesTheClientOnlyWhenAskedFor) {
  Start(Request(8, /*progress=*/true));
  workers_.AnswerReserve("t1");
  EXPECT_TRUE(workers_.prefill_requests[0].progress());
  ASSERT_TRUE(workers_.prefills[0]->Send(Progress(1, 3)));
  ASSERT_TRUE(workers_.prefills[0]->Send(Progress(2, 3)));
  EXPECT_EQ(client().Progress(), 2);

  Start(Request(8, /*progress=*/false));
  workers_.AnswerReserve("t2");
  EXPECT_TRUE(workers_.prefill_requests[1].progress());  // asked anyway: it shows life
  ASSERT_TRUE(workers_.prefills[1]->Send(Progress(1, 3)));
  EXPECT_EQ(client(1).Progress(), 0);
}

TEST_F(RequestFlowTest, TokenizingRunsOffThePathWhenAnOffloadIsGiven) {
  std::vector<std::function<void()>> offloaded;
  env_.offload = [&](std::function<void()> fn) { offloaded.push_back(std::move(fn)); };
  ringserve::v1::GenerateRequest r = Request();
  r.set_text("hello");  // no TextCodec: UNIMPLEMENTED, but only after the offload ran
  auto flow = Start(r);
  EXPECT_EQ(flow->state(), State::kAdmitted);
  ASSERT_EQ(offloaded.size(), 1u);
  offloaded[0]();
  EXPECT_EQ(flow->state(), State::kFinished);
  EXPECT_EQ(client().status.code(), absl::StatusCode::kUnimplemented);
}

TEST_F(RequestFlowTest, AnInvalidPromptEndsWithInvalidArgumentBeforeAnyReservation) {
  ringserve::v1::GenerateRequest r = Request(4000);  // 3 + 4000 > 4096 context
  r.mutable_token_ids()->add_ids(1);
  r.mutable_stopping()->set_max_tokens(4094);
  Start(r);
  EXPECT_EQ(client().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(workers_.reserves.empty());
}

TEST_F(RequestFlowTest, FinishIsIdempotent) {
  auto flow = StartDecoding();
  flow->OnClientCancelled();
  flow->OnClientCancelled();
  timers_.Advance(absl::Hours(1));
  EXPECT_EQ(client().finishes, 1);
  EXPECT_EQ(observer_.outcomes.size(), 1u);
  ExpectReleasedOnce("t1");
}

// ---- Cancel, deadline and disconnect in every state ----

TEST_F(RequestFlowTest, CancelWhileAdmitted) {
  std::vector<std::function<void()>> offloaded;
  env_.offload = [&](std::function<void()> fn) { offloaded.push_back(std::move(fn)); };
  ringserve::v1::GenerateRequest r = Request();
  r.set_text("x");
  auto flow = Start(r);
  flow->OnClientCancelled();
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  offloaded[0]();  // the late tokenization changes nothing
  EXPECT_EQ(client().finishes, 1);
  EXPECT_TRUE(workers_.reserves.empty());
}

TEST_F(RequestFlowTest, DeadlineWhileAdmitted) {
  std::vector<std::function<void()>> offloaded;
  env_.offload = [&](std::function<void()> fn) { offloaded.push_back(std::move(fn)); };
  ringserve::v1::GenerateRequest r = Request();
  r.set_text("x");
  Start(r, absl::Milliseconds(100));
  timers_.Advance(absl::Milliseconds(100));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("admitted"), std::string::npos);
  offloaded[0]();
  EXPECT_EQ(client().finishes, 1);
}

TEST_F(RequestFlowTest, ADisconnectedClientEndsAQueuedRequestLikeACancel) {
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  // The adapter reports a vanished client (a failed write, OnDone) as a cancel, possibly twice.
  flow->OnClientCancelled();
  flow->OnClientWriteDone();
  flow->OnClientCancelled();
  EXPECT_EQ(client().finishes, 1);
  EXPECT_EQ(queue_.size(), 0u);
  EXPECT_EQ(observer_.outcomes, std::vector<std::string>{"cancelled"});
}

TEST_F(RequestFlowTest, CancelWhileQueuedLeavesTheQueue) {
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("all 64 state slots are in use"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("all 64 state slots are in use"));
  EXPECT_EQ(flow->state(), State::kQueued);
  EXPECT_EQ(queue_.size(), 1u);
  flow->OnClientCancelled();
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(queue_.size(), 0u);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(RequestFlowTest, DeadlineWhileQueued) {
  auto flow = Start(Request(), absl::Seconds(2));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(flow->state(), State::kQueued);
  timers_.Advance(absl::Seconds(2));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("queued"), std::string::npos) << client().status;
  EXPECT_EQ(queue_.size(), 0u);
}

TEST_F(RequestFlowTest, CancelWhileReservingReleasesTheLateReservation) {
  auto flow = Start();
  flow->OnClientCancelled();
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  workers_.AnswerReserve("late");
  ExpectReleasedOnce("late");
  EXPECT_TRUE(workers_.prefills.empty());
}

TEST_F(RequestFlowTest, DeadlineWhileReservingReleasesTheLateReservation) {
  Start(Request(), absl::Milliseconds(300));
  timers_.Advance(absl::Milliseconds(300));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("reserving"), std::string::npos);
  workers_.AnswerReserve("late");
  ExpectReleasedOnce("late");
}

TEST_F(RequestFlowTest, CancelWhilePrefillingCancelsBothStreamsAndReleasesOnce) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  flow->OnClientCancelled();
  EXPECT_TRUE(workers_.prefills[0]->cancelled);
  EXPECT_TRUE(workers_.decodes[0]->cancelled);
  ExpectReleasedOnce("t1");
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(RequestFlowTest, DeadlineWhilePrefilling) {
  Start(Request(), absl::Seconds(5));
  workers_.AnswerReserve("t1");
  timers_.Advance(absl::Seconds(5));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("prefilling"), std::string::npos);
  EXPECT_TRUE(workers_.prefills[0]->cancelled);
  ExpectReleasedOnce("t1");
}

TEST_F(RequestFlowTest, CancelWhileDecodingReleasesOnce) {
  auto flow = StartDecoding();
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({101})));
  flow->OnClientCancelled();
  EXPECT_TRUE(workers_.decodes[0]->cancelled);
  ExpectReleasedOnce("t1");
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(observer_.outcomes, std::vector<std::string>{"cancelled"});
}

TEST_F(RequestFlowTest, DeadlineWhileDecoding) {
  auto flow = Start(Request(), absl::Seconds(3));
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  timers_.Advance(absl::Seconds(3));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("decoding"), std::string::npos);
  ExpectReleasedOnce("t1");
}

TEST_F(RequestFlowTest, CancelWhileMigrating) {
  auto flow = StartDecoding();
  workers_.decodes[0]->End(absl::UnavailableError("connection reset"));
  EXPECT_EQ(flow->state(), State::kMigrating);
  flow->OnClientCancelled();
  EXPECT_EQ(client().status.code(), absl::StatusCode::kCancelled);
  workers_.AnswerReserve("t2");
  ExpectReleasedOnce("t1");
  ExpectReleasedOnce("t2");
  EXPECT_EQ(workers_.prefills.size(), 1u);
}

TEST_F(RequestFlowTest, DeadlineWhileMigrating) {
  auto flow = Start(Request(), absl::Seconds(3));
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  workers_.decodes[0]->End(absl::UnavailableError("gone"));
  timers_.Advance(absl::Seconds(3));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("migrating"), std::string::npos);
}

TEST_F(RequestFlowTest, ClientDisconnectWhileDecodingAfterTheLastTokenChangesNothing) {
  auto flow = StartDecoding();
  ASSERT_TRUE(workers_.decodes[0]->Send(Finished(ringserve::v1::FINISH_REASON_STOP)));
  flow->OnClientCancelled();
  EXPECT_TRUE(client().status.ok());
  EXPECT_EQ(client().finishes, 1);
  EXPECT_TRUE(workers_.released.empty());
}

// ---- Reservations and the queue ----

TEST_F(RequestFlowTest, AFullWorkerIsPassedOverForTheNext) {
  auto flow = Start();
  const std::string first = workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  ASSERT_EQ(workers_.reserves.size(), 2u);
  EXPECT_NE(workers_.reserves[1].address, first);
  workers_.AnswerReserve("t1");
  EXPECT_EQ(flow->state(), State::kPrefilling);
  EXPECT_TRUE(decode_.failures.empty());  // full is not broken
}

TEST_F(RequestFlowTest, AnUnavailableWorkerIsReportedAndTheNextTried) {
  auto flow = Start();
  const std::string first = workers_.AnswerReserve(absl::UnavailableError("refused"));
  EXPECT_EQ(decode_.failures, std::vector<std::string>{first});
  workers_.AnswerReserve("t1");
  EXPECT_EQ(flow->state(), State::kPrefilling);
}

TEST_F(RequestFlowTest, AReserveThatTimesOutTriesTheNextWorker) {
  auto flow = Start();
  EXPECT_EQ(workers_.reserves[0].deadline, timers_.Now() + env_.options.unary_timeout);
  const std::string first =
      workers_.AnswerReserve(absl::DeadlineExceededError("Deadline Exceeded"));
  EXPECT_EQ(decode_.failures, std::vector<std::string>{first});
  ASSERT_EQ(workers_.reserves.size(), 2u);
  workers_.AnswerReserve("t1");
  EXPECT_EQ(flow->state(), State::kPrefilling);
}

TEST_F(RequestFlowTest, AReserveRefusedAsInvalidEndsTheRequest) {
  Start();
  workers_.AnswerReserve(absl::InvalidArgumentError("max_tokens too large"));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(workers_.reserves.size(), 1u);
}

TEST_F(RequestFlowTest, EveryWorkerFullQueuesTheRequest) {
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(flow->state(), State::kQueued);
  EXPECT_EQ(client().finishes, 0);
}

TEST_F(RequestFlowTest, AQueuedRequestIsPlacedWhenWoken) {
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  timers_.Advance(absl::Seconds(2));
  queue_.Wake();
  EXPECT_EQ(flow->state(), State::kReserving);
  workers_.AnswerReserve("t1");
  EXPECT_EQ(flow->state(), State::kPrefilling);
  ASSERT_EQ(observer_.waits.size(), 1u);
  EXPECT_EQ(observer_.waits[0], absl::Seconds(2));
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(1)));
  ASSERT_TRUE(workers_.decodes[0]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  EXPECT_EQ(client().Finished()->timings().queue_us(), 2000000u);
}

TEST_F(RequestFlowTest, AQueuedRequestWhoseTurnFindsNoRoomKeepsItsPlace) {
  auto a = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  auto b = Start();  // joins behind a
  EXPECT_EQ(b->state(), State::kQueued);
  queue_.Wake();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(a->state(), State::kQueued);
  queue_.Wake();  // a again, not b
  EXPECT_EQ(a->state(), State::kReserving);
  EXPECT_EQ(b->state(), State::kQueued);
}

TEST_F(RequestFlowTest, QueuedRequestsArePlacedFirstInFirstOut) {
  std::vector<std::shared_ptr<RequestFlow>> flows;
  flows.push_back(Start());
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  for (int i = 0; i < 3; ++i) flows.push_back(Start());
  EXPECT_EQ(queue_.size(), 4u);
  EXPECT_EQ(workers_.unanswered(), 0u);  // newcomers do not overtake
  queue_.Wake();
  EXPECT_EQ(workers_.reserves.back().request.request_id(), flows[0]->request_id());
  workers_.AnswerReserve("t0");  // placed: the next one tries
  EXPECT_EQ(workers_.reserves.back().request.request_id(), flows[1]->request_id());
  workers_.AnswerReserve("t1");
  EXPECT_EQ(workers_.reserves.back().request.request_id(), flows[2]->request_id());
}

TEST_F(RequestFlowTest, TheQueueTimeoutAnswersResourceExhausted) {
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("all 64 state slots are in use"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("all 64 state slots are in use"));
  timers_.Advance(absl::Seconds(30));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(client().status.message().find("slots"), std::string::npos) << client().status;
  EXPECT_NE(client().status.message().find("--queue-timeout-ms"), std::string::npos);
  EXPECT_EQ(queue_.size(), 0u);
}

TEST_F(RequestFlowTest, AReleasedReservationWakesTheQueue) {
  auto running = StartDecoding();
  auto waiting = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(waiting->state(), State::kQueued);
  running->OnClientCancelled();  // releases t1, which wakes the head waiter
  EXPECT_EQ(waiting->state(), State::kReserving);
}

TEST_F(RequestFlowTest, AFinishedSequenceWakesTheQueue) {
  auto running = StartDecoding();
  auto waiting = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  ASSERT_TRUE(workers_.decodes[0]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  EXPECT_EQ(waiting->state(), State::kReserving);
}

TEST_F(RequestFlowTest, AFinishedWaiterPassesItsTurnOn) {
  auto a = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  auto b = Start();
  // a's turn is handed out while a is cancelled: b gets it.
  queue_.Wake();
  a->OnClientCancelled();
  EXPECT_EQ(a->state(), State::kFinished);
  workers_.AnswerReserve("late-a");
  ExpectReleasedOnce("late-a");  // which also wakes b
  EXPECT_EQ(b->state(), State::kReserving);
}

// ---- Pools ----

TEST_F(RequestFlowTest, AnEmptyDecodePoolIsRefreshedThenAnswersUnavailable) {
  for (auto& v : decode_.views()) v.healthy = false;
  Start();
  EXPECT_EQ(decode_.refreshes, 1);
  EXPECT_EQ(client().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client().status.message().find("decode pool"), std::string::npos);
}

TEST_F(RequestFlowTest, AnEmptyDecodePoolRefreshThatFindsAWorkerProceeds) {
  for (auto& v : decode_.views()) v.healthy = false;
  decode_.on_refresh = [](FakeDirectory* d) { d->views()[1].healthy = true; };
  auto flow = Start();
  ASSERT_EQ(workers_.reserves.size(), 1u);
  EXPECT_EQ(workers_.reserves[0].address, "d1");
  EXPECT_EQ(flow->state(), State::kReserving);
}

TEST_F(RequestFlowTest, EveryDecodeWorkerFailingAnswersUnavailableNamingThePool) {
  Start();
  workers_.AnswerReserve(absl::UnavailableError("connection refused"));
  workers_.AnswerReserve(absl::UnavailableError("connection refused"));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client().status.message().find("decode pool"), std::string::npos);
}

TEST_F(RequestFlowTest, AnEmptyPrefillPoolAnswersUnavailableAndReleases) {
  for (auto& v : prefill_.views()) v.healthy = false;
  Start();
  workers_.AnswerReserve("t1");
  EXPECT_EQ(prefill_.refreshes, 1);
  EXPECT_EQ(client().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client().status.message().find("prefill pool"), std::string::npos);
  ExpectReleasedOnce("t1");
}

// ---- Prefill failures ----

TEST_F(RequestFlowTest, AFailedPrefillIsRetriedOnAnotherWorker) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  const std::string first = workers_.prefills[0]->address;
  workers_.prefills[0]->End(absl::UnavailableError("prefill worker died"));
  EXPECT_EQ(prefill_.failures, std::vector<std::string>{first});
  ExpectReleasedOnce("t1");
  EXPECT_TRUE(workers_.decodes[0]->cancelled);
  EXPECT_EQ(flow->state(), State::kReserving);
  workers_.AnswerReserve("t2");
  ASSERT_EQ(workers_.prefills.size(), 2u);
  EXPECT_NE(workers_.prefills[1]->address, first);
  ASSERT_TRUE(workers_.prefills[1]->Send(Done(100)));
  ASSERT_TRUE(workers_.decodes[1]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  EXPECT_TRUE(client().status.ok());
  EXPECT_EQ(observer_.prefill_retries, 1);
}

TEST_F(RequestFlowTest, APrefillRefusedAsInvalidEndsTheRequest) {
  Start();
  workers_.AnswerReserve("t1");
  workers_.prefills[0]->End(absl::InvalidArgumentError("token 5000 out of range"));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kInvalidArgument);
  ExpectReleasedOnce("t1");
}

TEST_F(RequestFlowTest, RetriesGiveUpAfterMaxAttempts) {
  env_.options.max_attempts = 3;
  Start();
  for (int i = 0; i < 3; ++i) {
    prefill_.views()[0].healthy = prefill_.views()[1].healthy = true;
    workers_.AnswerReserve("t" + std::to_string(i));
    workers_.prefills.back()->End(absl::UnavailableError("died"));
  }
  EXPECT_EQ(client().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client().status.message().find("gave up after 3 attempts"), std::string::npos);
  for (int i = 0; i < 3; ++i) ExpectReleasedOnce("t" + std::to_string(i));
}

TEST_F(RequestFlowTest, ADecodeWorkerLostDuringPrefillStartsAFreshAttempt) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  // The decode stream is not read during prefill, but its call may still end.
  workers_.decodes[0]->End(absl::UnavailableError("decode died"));
  EXPECT_TRUE(workers_.prefills[0]->cancelled);
  EXPECT_EQ(flow->state(), State::kReserving);
  ExpectReleasedOnce("t1");
}

// ---- Decode loss and migration ----

TEST_F(RequestFlowTest, ALostDecodeWorkerMigratesWithPromptAndTokensSoFar) {
  auto flow = StartDecoding();
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({101, 102})));
  const std::string lost = workers_.decodes[0]->address;
  workers_.decodes[0]->End(absl::UnavailableError("Socket closed"));
  EXPECT_EQ(flow->state(), State::kMigrating);
  EXPECT_EQ(decode_.failures, std::vector<std::string>{lost});
  ExpectReleasedOnce("t1");
  ASSERT_EQ(workers_.reserves.size(), 2u);
  EXPECT_EQ(workers_.reserves[1].request.prompt_tokens(), 6u);  // 3 + 100 101 102
  EXPECT_EQ(workers_.reserves[1].request.max_tokens(), 5u);
  EXPECT_NE(workers_.reserves[1].address, lost);
  workers_.AnswerReserve("t2");
  const auto& p = workers_.prefill_requests[1];
  EXPECT_EQ(std::vector<uint32_t>(p.tokens().begin(), p.tokens().end()),
            (std::vector<uint32_t>{5, 6, 7, 100, 101, 102}));
  EXPECT_EQ(p.sample_position(), 6u);
  EXPECT_EQ(p.sampling().seed(), 42u);
  ASSERT_TRUE(workers_.prefills[1]->Send(Done(103)));
  ASSERT_TRUE(workers_.decodes[1]->Send(Finished(ringserve::v1::FINISH_REASON_LENGTH)));
  EXPECT_EQ(client().Tokens(), (std::vector<uint32_t>{100, 101, 102, 103}));
  EXPECT_EQ(observer_.migrations, 1);
}

TEST_F(RequestFlowTest, ADecodeStreamEndingWithoutFinishedMigrates) {
  auto flow = StartDecoding();
  workers_.decodes[0]->End(absl::OkStatus());
  EXPECT_EQ(flow->state(), State::kMigrating);
}

TEST_F(RequestFlowTest, AMigrationWithEveryTokenAlreadyStreamedEndsWithLength) {
  StartDecoding(Request(2));
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({101})));
  workers_.decodes[0]->End(absl::UnavailableError("gone"));
  EXPECT_TRUE(client().status.ok());
  EXPECT_EQ(client().Finished()->reason(), ringserve::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(workers_.reserves.size(), 1u);
}

TEST_F(RequestFlowTest, ADecodeFailureReportedByTheWorkerAnswersInternal) {
  StartDecoding();
  DecodeEvent e = Finished(ringserve::v1::FINISH_REASON_ERROR);
  e.mutable_finished()->set_error_message("nan in logits");
  ASSERT_TRUE(workers_.decodes[0]->Send(e));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(client().status.message().find("nan in logits"), std::string::npos);
  EXPECT_TRUE(workers_.released.empty());
}

TEST_F(RequestFlowTest, AWorkerRestartedWithANewEpochIsTreatedAsLost) {
  auto flow = StartDecoding();
  const std::string address = workers_.decodes[0]->address;
  decode_.Find(address)->epoch = 2;  // the pool saw it come back
  workers_.decodes[0]->End(absl::NotFoundError("unknown ticket"));
  EXPECT_EQ(flow->state(), State::kMigrating);
}

TEST_F(RequestFlowTest, ANonRetryableDecodeErrorFromTheSameEpochEndsTheRequest) {
  StartDecoding();
  workers_.decodes[0]->End(absl::NotFoundError("unknown ticket"));
  EXPECT_EQ(client().status.code(), absl::StatusCode::kNotFound);
  ExpectReleasedOnce("t1");
}

TEST_F(RequestFlowTest, ALateEventFromAnAbandonedAttemptIsIgnored) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  auto old_prefill = workers_.prefills[0];
  workers_.decodes[0]->End(absl::UnavailableError("decode died"));
  workers_.AnswerReserve("t2");
  // The first attempt's prefill was cancelled; nothing it says now matters.
  EXPECT_FALSE(old_prefill->Send(Done(999)));
  ASSERT_TRUE(workers_.prefills[1]->Send(Done(100)));
  EXPECT_EQ(client().Tokens(), std::vector<uint32_t>{100});
}

// ---- Hung workers ----

TEST_F(RequestFlowTest, AHungPrefillWorkerIsRetriedElsewhere) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  const std::string hung = workers_.prefills[0]->address;
  timers_.Advance(absl::Seconds(10));
  EXPECT_EQ(prefill_.failures, std::vector<std::string>{hung});
  EXPECT_EQ(observer_.hung, std::vector<std::string>{"prefill"});
  EXPECT_TRUE(workers_.prefills[0]->cancelled);
  ExpectReleasedOnce("t1");
  workers_.AnswerReserve("t2");
  EXPECT_NE(workers_.prefills[1]->address, hung);
}

TEST_F(RequestFlowTest, PrefillProgressCountsAsLife) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  for (int i = 0; i < 5; ++i) {
    timers_.Advance(absl::Seconds(6));
    ASSERT_TRUE(workers_.prefills[0]->Send(Progress(i, 10)));
  }
  EXPECT_EQ(flow->state(), State::kPrefilling);
  EXPECT_TRUE(prefill_.failures.empty());
}

TEST_F(RequestFlowTest, ASilentPrefillWorkerThatAnswersPollsIsOnlyBusy) {
  auto flow = Start();
  workers_.AnswerReserve("t1");
  const std::string address = workers_.prefills[0]->address;
  for (int i = 0; i < 6; ++i) {
    prefill_.Find(address)->last_seen = timers_.Now();
    timers_.Advance(absl::Seconds(5));
  }
  EXPECT_EQ(flow->state(), State::kPrefilling);
  timers_.Advance(absl::Seconds(10));  // and now it stops answering polls too
  EXPECT_EQ(prefill_.failures, std::vector<std::string>{address});
}

TEST_F(RequestFlowTest, AHungDecodeWorkerMigratesTheStream) {
  auto flow = StartDecoding();
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({101})));
  const std::string hung = workers_.decodes[0]->address;
  timers_.Advance(absl::Seconds(10));
  EXPECT_EQ(decode_.failures, std::vector<std::string>{hung});
  EXPECT_EQ(flow->state(), State::kMigrating);
  EXPECT_TRUE(workers_.decodes[0]->cancelled);
  ExpectReleasedOnce("t1");
  EXPECT_EQ(workers_.reserves[1].request.prompt_tokens(), 5u);
}

// ---- Back-pressure ----

TEST_F(RequestFlowTest, AClientThatFallsBehindStopsTheDecodeReads) {
  clients_.reserve(1);
  auto flow = Start();
  client().auto_ack = false;
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));  // 1 unsent
  for (uint32_t t = 101; t < 104; ++t) ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({t})));
  EXPECT_EQ(client().unacked, 4);
  EXPECT_FALSE(workers_.decodes[0]->Send(Tokens({104})));  // not reading
  client().Ack(1);
  EXPECT_TRUE(workers_.decodes[0]->Send(Tokens({104})));
}

TEST_F(RequestFlowTest, APausedStreamIsNotTakenForAHungWorker) {
  auto flow = Start();
  client().auto_ack = false;
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  for (uint32_t t = 101; t < 104; ++t) ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({t})));
  timers_.Advance(absl::Seconds(20));
  EXPECT_TRUE(decode_.failures.empty());
  EXPECT_EQ(flow->state(), State::kDecoding);
}

TEST_F(RequestFlowTest, AClientThatStaysAwayLosesItsRequestWithAClearStatus) {
  auto flow = Start();
  client().auto_ack = false;
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  for (uint32_t t = 101; t < 104; ++t) ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({t})));
  timers_.Advance(absl::Seconds(30));
  EXPECT_TRUE(client().aborted);
  EXPECT_EQ(client().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client().status.message().find("read nothing"), std::string::npos);
  ExpectReleasedOnce("t1");
}

TEST_F(RequestFlowTest, AClientThatCatchesUpInTimeKeepsItsRequest) {
  auto flow = Start();
  client().auto_ack = false;
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  for (uint32_t t = 101; t < 104; ++t) ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({t})));
  timers_.Advance(absl::Seconds(29));
  client().Ack(4);
  timers_.Advance(absl::Seconds(5));
  EXPECT_EQ(flow->state(), State::kDecoding);
  EXPECT_EQ(client().finishes, 0);
  EXPECT_TRUE(workers_.decodes[0]->Send(Tokens({104})));
}

// ---- Timers whose cancel came too late ----

TEST_F(RequestFlowTest, AQueueTimerThatFiresAfterPlacementIsIgnored) {
  env_.options.worker_timeout = absl::Hours(1);
  timers_.late_cancel = true;
  auto flow = Start();
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  workers_.AnswerReserve(absl::ResourceExhaustedError("full"));
  timers_.Advance(absl::Seconds(10));
  queue_.Wake();
  workers_.AnswerReserve("t1");  // placed; the cancel of the queue timer is too late
  timers_.Advance(absl::Seconds(20));
  EXPECT_EQ(flow->state(), State::kPrefilling);
  EXPECT_EQ(client().finishes, 0);
}

TEST_F(RequestFlowTest, AStallTimerOfAnEarlierPauseDoesNotEndTheRequest) {
  env_.options.worker_timeout = absl::Hours(1);
  timers_.late_cancel = true;
  auto flow = Start();
  client().auto_ack = false;
  workers_.AnswerReserve("t1");
  ASSERT_TRUE(workers_.prefills[0]->Send(Done(100)));
  for (uint32_t t = 101; t < 104; ++t) ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({t})));
  timers_.Advance(absl::Seconds(29));
  client().Ack(1);  // resumes; then falls behind again at once
  ASSERT_TRUE(workers_.decodes[0]->Send(Tokens({104})));
  timers_.Advance(absl::Seconds(2));  // the first pause's timer fires now
  EXPECT_EQ(flow->state(), State::kDecoding);
  timers_.Advance(absl::Seconds(28));  // the second pause's timer
  EXPECT_TRUE(client().aborted);
}

// ---- Admission and the serializer ----

TEST(AdmissionTest, BoundsInflightAndRejectsDuplicateIds) {
  Admission admission(2);
  EXPECT_TRUE(admission.Enter("a").ok());
  EXPECT_EQ(admission.Enter("a").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(admission.Enter("b").ok());
  const absl::Status full = admission.Enter("c");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("requests in flight"), std::string::npos);
  admission.Leave("a");
  EXPECT_TRUE(admission.Enter("c").ok());
  EXPECT_EQ(admission.inflight(), 2u);
}

TEST(AdmissionQueueTest, WakesInOrderAndSkipsRemovedWaiters) {
  AdmissionQueue q;
  std::vector<int> order;
  q.Push([&] { order.push_back(1); });
  const auto two = q.Push([&] { order.push_back(2); });
  q.Push([&] { order.push_back(3); });
  q.Push([&] { order.push_back(0); }, /*front=*/true);
  q.Remove(two);
  for (int i = 0; i < 4; ++i) q.Wake();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(q.size(), 0u);
}

TEST(SerializerTest, ATaskPostedByATaskRunsAfterIt) {
  Serializer s;
  std::vector<int> order;
  s.Post([&] {
    s.Post([&] { order.push_back(2); });
    order.push_back(1);
  });
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

}  // namespace
}  // namespace ringserve::router::core::testing
