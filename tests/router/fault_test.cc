// Faults with real processes on loopback, killed (SIGKILL) at points the test chooses: the
// request completes elsewhere with the same output, or ends with a clear status; no worker keeps
// a reservation, buffer or job afterwards.
#include <signal.h>

#include <thread>

#include "gtest/gtest.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

class FaultTest : public ReferenceModelTest {
 protected:
  void SetUp() override {
    auto c = cli::LocalCluster::Start(ClusterOptions(dir_->path(), 2, 2));
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }

  // The member of `role` whose own status shows work in flight.
  cli::LocalCluster::Member* Busy(const std::string& role) {
    for (auto& m : cluster_->members()) {
      if (m.role != role || !m.process->running()) continue;
      const auto s = WorkerStatusOf(m.address, role == "prefill");
      if (s.running() > 0 || s.reservations() > 0) return &m;
    }
    return nullptr;
  }

  // Streams `req`, and after `after` events of the kind `kill_on` SIGKILLs the busy worker of
  // `role`.
  Answer RunAndKill(const ringserve::v1::GenerateRequest& req, const std::string& role,
                    bool on_progress, int after, std::string* killed) {
    auto channel =
        grpc::CreateChannel(cluster_->router_address(), grpc::InsecureChannelCredentials());
    auto stub = ringserve::v1::Generation::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
    auto reader = stub->Generate(&ctx, req);
    ringserve::v1::GenerateResponse r;
    Answer a;
    int seen = 0;
    while (reader->Read(&r)) {
      const bool counts = on_progress ? r.has_progress() : r.has_delta();
      if (counts && ++seen == after && killed->empty()) {
        if (auto* m = Busy(role); m != nullptr) {
          *killed = m->address;
          EXPECT_TRUE(m->process->Signal(SIGKILL).ok());
          EXPECT_TRUE(m->process->Wait(absl::Seconds(10)).ok());
        }
      }
      if (r.has_delta()) {
        a.ids.insert(a.ids.end(), r.delta().token_ids().begin(), r.delta().token_ids().end());
      }
      if (r.has_finished()) a.finished = r.finished();
    }
    a.status = reader->Finish();
    return a;
  }

  std::unique_ptr<cli::LocalCluster> cluster_;
};

TEST_F(FaultTest, DecodeWorkerDeathMidGenerationMigratesTheStream) {
  for (float temperature : {0.0f, 0.8f}) {
    const auto prompt = PromptOf(40, 11);
    auto req = TokenRequest(prompt, 1500, temperature, 99);
    req.mutable_sampling()->set_top_k(20);
    std::string killed;
    const Answer a = RunAndKill(req, "decode", /*on_progress=*/false, 5, &killed);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_FALSE(killed.empty()) << "no decode worker was busy";
    EXPECT_EQ(a.ids, Offline(req)) << "temperature " << temperature;
    EXPECT_TRUE(ClusterSettlesIdle(cluster_.get()));
    // Bring the pool back to two workers for the next round.
    for (auto& m : cluster_->members()) {
      if (m.role == "decode" && !m.process->running()) {
        const std::string port = m.address.substr(m.address.rfind(':') + 1);
        ASSERT_TRUE(cluster_->Restart("decode", m.index, std::stoi(port)).ok());
      }
    }
    ASSERT_TRUE(RouterSeesHealthy(cluster_->router_address(), "decode", 2));
  }
}

TEST_F(FaultTest, PrefillWorkerDeathMidPrefillIsRetriedElsewhere) {
  const auto prompt = PromptOf(12000, 12);
  auto req = TokenRequest(prompt, 6);
  req.set_prefill_progress(true);
  std::string killed;
  const Answer a = RunAndKill(req, "prefill", /*on_progress=*/true, 1, &killed);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_FALSE(killed.empty()) << "no prefill worker was busy";
  EXPECT_EQ(a.ids, Offline(req));
  EXPECT_TRUE(ClusterSettlesIdle(cluster_.get()));
}

TEST_F(FaultTest, AWholePoolDownAnswersUnavailableNamingThePool) {
  for (auto& m : cluster_->members()) {
    if (m.role == "decode") {
      ASSERT_TRUE(m.process->Signal(SIGKILL).ok());
      ASSERT_TRUE(m.process->Wait(absl::Seconds(10)).ok());
    }
  }
  const absl::Time start = absl::Now();
  const Answer a = Generate(cluster_->router_address(), TokenRequest(PromptOf(10), 4));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(a.status.error_message().find("decode pool"), std::string::npos)
      << a.status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_TRUE(ClusterSettlesIdle(cluster_.get()));
}

TEST_F(FaultTest, ARestartedWorkerRejoinsWithANewEpoch) {
  auto* m = cluster_->Find("decode", 0);
  const uint64_t old_epoch = WorkerStatusOf(m->address, false).epoch();
  const std::string port = m->address.substr(m->address.rfind(':') + 1);
  ASSERT_TRUE(m->process->Signal(SIGKILL).ok());
  ASSERT_TRUE(m->process->Wait(absl::Seconds(10)).ok());
  ASSERT_TRUE(cluster_->Restart("decode", 0, std::stoi(port)).ok());
  EXPECT_NE(WorkerStatusOf(m->address, false).epoch(), old_epoch);
  EXPECT_TRUE(RouterSeesHealthy(cluster_->router_address(), "decode", 2));
  for (int i = 0; i < 6; ++i) {
    const auto prompt = PromptOf(30 + i, i);
    const auto req = TokenRequest(prompt, 5);
    const Answer a = Generate(cluster_->router_address(), req);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.ids, Offline(req));
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster_.get()));
}

// Overload: the router's admission bound and the queue for decode slots both answer
// RESOURCE_EXHAUSTED, each naming its limit, instead of queueing without bound.
void ExpectSecondRequestExhausted(const std::string& model_dir,
                                  const std::vector<std::string>& router_args,
                                  const std::vector<std::string>& decode_args,
                                  const std::string& fragment) {
  auto options = ClusterOptions(model_dir, 1, 1);
  options.router_args.insert(options.router_args.end(), router_args.begin(), router_args.end());
  options.decode_args = decode_args;
  auto cluster = cli::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string router = (*cluster)->router_address();
  auto channel = grpc::CreateChannel(router, grpc::InsecureChannelCredentials());
  auto stub = ringserve::v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, TokenRequest(PromptOf(20, 1), 5000));
  ringserve::v1::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r));  // in flight, holding its router slot and decode slot
  const Answer second = Generate(router, TokenRequest(PromptOf(20, 2), 4));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(second.status.error_message().find(fragment), std::string::npos)
      << second.status.error_message();
  ctx.TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
  EXPECT_TRUE(ClusterSettlesIdle(cluster->get()));
}

TEST(OverloadTest, AFullRouterAnswersResourceExhausted) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  ExpectSecondRequestExhausted(dir.path(), {"--max-inflight=1"}, {}, "requests in flight");
}

// A full decode pool queues the request in the router; only past --queue-timeout-ms does it
// answer RESOURCE_EXHAUSTED, naming the timeout and the workers' last answer.
TEST(OverloadTest, AFullDecodePoolAnswersResourceExhaustedAfterTheQueueTimeout) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  ExpectSecondRequestExhausted(dir.path(), {"--queue-timeout-ms=300"}, {"--max-seqs=1"}, "slot");
}

}  // namespace
}  // namespace ringserve::testing
