// The router's control plane with real processes on loopback: clients that vanish and deadlines
// that expire while a request is queued, prefilling, transferring or decoding leave nothing on any
// process; hung (SIGSTOP) workers are routed around with the same output; a burst larger than
// the decode slots queues in the router and is served; a client that never reads costs bounded
// memory and loses its request with a clear status.
#include <signal.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_join.h"
#include "common/base/subprocess.h"
#include "gtest/gtest.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

using ringserve::v1::GenerateRequest;
using ringserve::v1::GenerateResponse;

// One Generate stream on the callback API, so a test holds hundreds open on gRPC's threads. A
// stream made with read=false never reads (a client that went quiet).
class AsyncGenerate : public grpc::ClientReadReactor<GenerateResponse> {
 public:
  AsyncGenerate(ringserve::v1::Generation::Stub* stub, GenerateRequest request,
                absl::Duration timeout, bool read = true)
      : request_(std::move(request)) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stub->async()->Generate(&ctx_, &request_, this);
    if (read) StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (response_.has_progress()) ++answer_.progress_events;
      if (response_.has_delta()) {
        answer_.ids.insert(answer_.ids.end(), response_.delta().token_ids().begin(),
                           response_.delta().token_ids().end());
      }
      if (response_.has_finished()) answer_.finished = response_.finished();
    }
    cv_.notify_all();
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    answer_.status = s;
    done_ = true;
    cv_.notify_all();
  }

  void Cancel() { ctx_.TryCancel(); }
  // Starts reading a stream made with read=false.
  void StartReading() { StartRead(&response_); }
  // Waits until the stream has `tokens` tokens or `progress` progress events, or has ended.
  bool WaitFor(size_t tokens, int progress, absl::Duration limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(limit), [&] {
      return done_ || answer_.ids.size() >= tokens ||
             (progress > 0 && answer_.progress_events >= progress);
    }) && !done_;
  }
  // Waits for the end of the stream (bounded) and returns what it got.
  Answer Wait(absl::Duration limit = absl::Minutes(3)) {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, absl::ToChronoNanoseconds(limit), [&] { return done_; }))
        << "the stream did not end";
    return answer_;
  }

 private:
  grpc::ClientContext ctx_;
  GenerateRequest request_;
  GenerateResponse response_;
  std::mutex mu_;
  std::condition_variable cv_;
  Answer answer_;
  bool done_ = false;
};

std::unique_ptr<ringserve::v1::Generation::Stub> StubOf(const std::string& address) {
  return ringserve::v1::Generation::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

// Re-reads the router's metrics until `series` has `value` (bounded).
bool RouterMetricSettles(const std::string& url, const std::string& series, double value,
                         absl::Duration limit = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + limit;
  while (Value(Scrape(url), series) != value) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << series << " = " << Value(Scrape(url), series) << ", expected " << value;
      return false;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

class ControlPlaneTest : public ReferenceModelTest {
 protected:
  // Starts a cluster whose router serves metrics, with extra router and decode arguments.
  void StartCluster(int prefill, int decode, std::vector<std::string> router_args,
                    std::vector<std::string> decode_args = {}) {
    auto options = ClusterOptions(dir_->path(), prefill, decode);
    options.router_args = {"--metrics-port=0", "--log-level=warning", "--poll-interval-ms=100",
                           "--max-new-tokens=60000"};
    options.router_args.insert(options.router_args.end(), router_args.begin(), router_args.end());
    options.decode_args = std::move(decode_args);
    auto c = cli::LocalCluster::Start(options);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stub_ = StubOf(cluster_->router_address());
  }
  std::string RouterMetrics() { return cluster_->Find("router", 0)->metrics_url; }

  // The worker of `role` whose own status shows work in flight.
  cli::LocalCluster::Member* Busy(const std::string& role) {
    for (auto& m : cluster_->members()) {
      if (m.role != role || !m.process->running()) continue;
      const auto s = WorkerStatusOf(m.address, role == "prefill");
      if (s.running() > 0 || s.reservations() > 0 || s.queued_prompt_tokens() > 0) return &m;
    }
    return nullptr;
  }

  // Nothing is held anywhere: workers idle, the router's in-flight and queue gauges at zero.
  void ExpectEverythingReleased() {
    EXPECT_TRUE(ClusterSettlesIdle(cluster_.get()));
    EXPECT_TRUE(RouterMetricSettles(RouterMetrics(), "ringserve_router_inflight_requests", 0));
    EXPECT_TRUE(RouterMetricSettles(RouterMetrics(), "ringserve_router_queued_requests", 0));
  }

  std::unique_ptr<cli::LocalCluster> cluster_;
  std::unique_ptr<ringserve::v1::Generation::Stub> stub_;
};

TEST_F(ControlPlaneTest, VanishingClientsAndExpiredDeadlinesInEveryPhaseLeaveNothingBehind) {
  // One slot per decode worker: two long streams fill the pool, so later requests queue.
  StartCluster(2, 2, {"--queue-timeout-ms=60000"}, {"--max-seqs=1"});
  AsyncGenerate a(stub_.get(), TokenRequest(PromptOf(30, 1), 60000), absl::Minutes(3));
  AsyncGenerate b(stub_.get(), TokenRequest(PromptOf(30, 2), 60000), absl::Seconds(6));
  ASSERT_TRUE(a.WaitFor(3, 0, absl::Seconds(60)));
  ASSERT_TRUE(b.WaitFor(3, 0, absl::Seconds(60)));

  // Queued: three whose deadline expires there, three whose client goes away.
  std::vector<std::unique_ptr<AsyncGenerate>> queued;
  for (int i = 0; i < 6; ++i) {
    queued.push_back(
        std::make_unique<AsyncGenerate>(stub_.get(), TokenRequest(PromptOf(20, 10 + i), 4),
                                        i < 3 ? absl::Milliseconds(800) : absl::Minutes(3)));
  }
  ASSERT_TRUE(RouterMetricSettles(RouterMetrics(), "ringserve_router_queued_requests", 6));
  for (int i = 3; i < 6; ++i) queued[i]->Cancel();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(queued[i]->Wait().status.error_code(),
              i < 3 ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED)
        << i << ": " << queued[i]->Wait().status.error_message();
  }

  // Decoding: one client goes away, one deadline expires.
  a.Cancel();
  EXPECT_EQ(a.Wait().status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(b.Wait().status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  // Prefilling: a long prompt whose client goes away after the first progress event, one whose
  // deadline expires.
  auto long_prompt = TokenRequest(PromptOf(12000, 3), 4);
  long_prompt.set_prefill_progress(true);
  AsyncGenerate p1(stub_.get(), long_prompt, absl::Minutes(3));
  ASSERT_TRUE(p1.WaitFor(1, 1, absl::Seconds(60)));
  p1.Cancel();
  EXPECT_EQ(p1.Wait().status.error_code(), grpc::StatusCode::CANCELLED);
  AsyncGenerate p2(stub_.get(), TokenRequest(PromptOf(12000, 4), 4), absl::Milliseconds(700));
  EXPECT_EQ(p2.Wait().status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // Transferring: the decode worker that is to receive a prompt's state stops (SIGSTOP) while
  // the prefill worker pushes to it, and the client goes away during that transfer.
  auto pushed = TokenRequest(PromptOf(12000, 5), 4);
  pushed.set_prefill_progress(true);
  AsyncGenerate p3(stub_.get(), pushed, absl::Minutes(3));
  ASSERT_TRUE(p3.WaitFor(1, 1, absl::Seconds(60)));
  auto* receiver = Busy("decode");
  ASSERT_NE(receiver, nullptr);
  ASSERT_TRUE(receiver->process->Signal(SIGSTOP).ok());
  p3.Cancel();
  EXPECT_EQ(p3.Wait().status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(receiver->process->Signal(SIGCONT).ok());
  // Transferring, with a deadline: the receiver stops at the first progress event, so the
  // push cannot finish and the deadline expires during it (or, on a very slow machine, already
  // during the prefill: then no worker holds the request any more and none is stopped).
  auto expiring = TokenRequest(PromptOf(12000, 6), 4);
  expiring.set_prefill_progress(true);
  AsyncGenerate p4(stub_.get(), expiring, absl::Seconds(6));
  ASSERT_TRUE(p4.WaitFor(1, 1, absl::Seconds(60)));
  auto* stopped = Busy("decode");
  if (stopped != nullptr) {
    ASSERT_TRUE(stopped->process->Signal(SIGSTOP).ok());
  }
  EXPECT_EQ(p4.Wait().status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << p4.Wait().status.error_message();
  if (stopped != nullptr) {
    ASSERT_TRUE(stopped->process->Signal(SIGCONT).ok());
  }
  // Three client processes killed (SIGKILL) while their long prompts are in prefill: the case
  // that once left the router counting them in flight forever.
  std::vector<std::unique_ptr<base::Subprocess>> clients;
  for (int i = 0; i < 3; ++i) {
    const auto prompt = PromptOf(12000, 40 + i);
    auto p = base::Subprocess::Start(
        {std::string(RINGSERVE_BIN_DIR) + "/ringctl", "generate", "--router",
         cluster_->router_address(), "--prompt-tokens", absl::StrJoin(prompt, ","), "--max-tokens",
         "4", "--ignore-eos", "--quiet"},
        false);
    ASSERT_TRUE(p.ok()) << p.status();
    clients.push_back(std::move(*p));
  }
  const absl::Time prefill_deadline = absl::Now() + absl::Seconds(60);
  while (Busy("prefill") == nullptr && absl::Now() < prefill_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  for (auto& c : clients) {
    ASSERT_TRUE(c->Signal(SIGKILL).ok());
    ASSERT_TRUE(c->Wait(absl::Seconds(10)).ok());
  }

  ExpectEverythingReleased();
  const Answer after = Generate(cluster_->router_address(), TokenRequest(PromptOf(20, 5), 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids.size(), 4u);

  // SIGTERM drains the whole cluster in seconds, every process exiting cleanly.
  cluster_->Stop(absl::Seconds(15));
  for (auto& m : cluster_->members()) {
    auto code = m.process->Wait(absl::ZeroDuration());
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 0) << m.role << " " << m.address;
  }
}

TEST_F(ControlPlaneTest, HungWorkersAreRoutedAroundWithTheSameOutput) {
  StartCluster(2, 2, {"--worker-timeout-ms=1500"});
  // A decode worker stops mid-stream: the stream moves to the other one.
  auto decode_req = TokenRequest(PromptOf(40, 21), 1500, 0.8f, 77);
  decode_req.mutable_sampling()->set_top_k(20);
  {
    AsyncGenerate stream(stub_.get(), decode_req, absl::Minutes(3));
    ASSERT_TRUE(stream.WaitFor(5, 0, absl::Seconds(60)));
    auto* hung = Busy("decode");
    ASSERT_NE(hung, nullptr);
    ASSERT_TRUE(hung->process->Signal(SIGSTOP).ok());
    const Answer during = Generate(cluster_->router_address(), TokenRequest(PromptOf(20, 6), 4));
    EXPECT_TRUE(during.status.ok()) << during.status.error_message();
    const Answer a = stream.Wait();
    EXPECT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.ids, Offline(decode_req));
    ASSERT_TRUE(hung->process->Signal(SIGCONT).ok());
  }
  ASSERT_TRUE(RouterSeesHealthy(cluster_->router_address(), "decode", 2));
  // A prefill worker stops mid-prompt: the prompt is prefilled again on the other one.
  auto prefill_req = TokenRequest(PromptOf(12000, 22), 6);
  prefill_req.set_prefill_progress(true);
  {
    AsyncGenerate stream(stub_.get(), prefill_req, absl::Minutes(3));
    ASSERT_TRUE(stream.WaitFor(1, 1, absl::Seconds(60)));
    auto* hung = Busy("prefill");
    ASSERT_NE(hung, nullptr);
    ASSERT_TRUE(hung->process->Signal(SIGSTOP).ok());
    const Answer during = Generate(cluster_->router_address(), TokenRequest(PromptOf(20, 7), 4));
    EXPECT_TRUE(during.status.ok()) << during.status.error_message();
    const Answer a = stream.Wait();
    EXPECT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.ids, Offline(prefill_req));
    ASSERT_TRUE(hung->process->Signal(SIGCONT).ok());
  }
  ExpectEverythingReleased();
}

TEST_F(ControlPlaneTest, AThousandConcurrentRequestsOnTwoDecodeWorkersOf64SlotsAreAllServed) {
  StartCluster(2, 2, {}, {"--max-seqs=64"});
  constexpr int kRequests = 1000;
  constexpr int kChannels = 4;
  std::vector<std::unique_ptr<ringserve::v1::Generation::Stub>> stubs;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("channel_id", c);  // separate connections
    stubs.push_back(ringserve::v1::Generation::NewStub(grpc::CreateCustomChannel(
        cluster_->router_address(), grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::unique_ptr<AsyncGenerate>> streams;
  for (int i = 0; i < kRequests; ++i) {
    streams.push_back(std::make_unique<AsyncGenerate>(
        stubs[i % kChannels].get(), TokenRequest(PromptOf(8 + i % 8, i % 8), 4), absl::Minutes(4)));
  }
  std::map<int, std::vector<uint32_t>> by_prompt;
  int ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    const Answer a = streams[i]->Wait(absl::Minutes(4));
    ASSERT_TRUE(a.status.ok()) << i << ": " << a.status.error_message();
    ASSERT_EQ(a.ids.size(), 4u);
    auto [it, fresh] = by_prompt.emplace(i % 8, a.ids);
    EXPECT_EQ(it->second, a.ids) << "request " << i;
    ++ok;
  }
  EXPECT_EQ(ok, kRequests);
  ExpectEverythingReleased();
}

TEST_F(ControlPlaneTest, AClientThatNeverReadsCostsBoundedMemoryAndLosesItsRequest) {
  StartCluster(1, 1, {"--client-timeout-ms=1000"});
  const pid_t router = cluster_->Find("router", 0)->process->pid();
  const int64_t before = base::UsageOf(router).rss_kib;
  constexpr int kSilent = 4;
  // A small receive window: the client's transport takes little before the router must hold.
  grpc::ChannelArguments args;
  args.SetInt("grpc.http2.lookahead_bytes", 1024);
  args.SetInt("grpc.http2.bdp_probe", 0);
  auto silent_stub = ringserve::v1::Generation::NewStub(grpc::CreateCustomChannel(
      cluster_->router_address(), grpc::InsecureChannelCredentials(), args));
  std::vector<std::unique_ptr<AsyncGenerate>> silent;
  for (int i = 0; i < kSilent; ++i) {
    silent.push_back(std::make_unique<AsyncGenerate>(
        silent_stub.get(), TokenRequest(PromptOf(20, 30 + i), 60000), absl::Minutes(3),
        /*read=*/false));
  }
  // Others are served meanwhile.
  const Answer other = Generate(cluster_->router_address(), TokenRequest(PromptOf(20, 8), 4));
  EXPECT_TRUE(other.status.ok()) << other.status.error_message();
  // The router ends each request once its client has read nothing for --client-timeout-ms.
  EXPECT_TRUE(RouterMetricSettles(RouterMetrics(),
                                  "ringserve_router_requests_total{outcome=\"deadline_exceeded\"}",
                                  kSilent, absl::Seconds(60)));
  const int64_t after = base::UsageOf(router).rss_kib;
  EXPECT_LT(after - before, 16 * 1024) << before << " KiB -> " << after << " KiB";
  // What the clients find when they come back: some tokens, then the end of the call.
  for (auto& s : silent) {
    s->StartReading();
    EXPECT_EQ(s->Wait().status.error_code(), grpc::StatusCode::CANCELLED);
  }
  ExpectEverythingReleased();
}

}  // namespace
}  // namespace ringserve::testing
