// The disaggregated system end to end: real router, prefill and decode processes on loopback,
// compared token for token with the engine running in this process.
#include <thread>

#include "common/model/generate.h"
#include "common/model/model.h"
#include "common/text/tokenizer.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeDefaultModel(dir_->path());
    auto cluster = cli::LocalCluster::Start(ClusterOptions(dir_->path(), 2, 2));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    backend_ = new kernels::CpuBackend(1);
    auto m = model::HybridModel::Load(dir_->path(), backend_, {});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete model_;
    delete backend_;
    delete dir_;
  }

  static std::vector<uint32_t> Offline(const std::vector<uint32_t>& prompt, int max_tokens,
                                       float temperature, uint64_t seed) {
    model::GenerateOptions options;
    options.max_tokens = max_tokens;
    options.ignore_eos = true;
    options.sampling.temperature = temperature;
    options.sampling.seed = seed;
    std::vector<int32_t> p(prompt.begin(), prompt.end());
    auto out = model::Generate(model_, p, options, nullptr);
    EXPECT_TRUE(out.ok()) << out.status();
    return std::vector<uint32_t>(out->begin(), out->end());
  }

  static TempDir* dir_;
  static cli::LocalCluster* cluster_;
  static kernels::CpuBackend* backend_;
  static model::HybridModel* model_;
};
TempDir* ClusterTest::dir_ = nullptr;
cli::LocalCluster* ClusterTest::cluster_ = nullptr;
kernels::CpuBackend* ClusterTest::backend_ = nullptr;
model::HybridModel* ClusterTest::model_ = nullptr;

TEST_F(ClusterTest, GreedyOutputEqualsOfflineGeneration) {
  for (int n : {1, 100, 5000}) {
    const auto prompt = PromptOf(n, n);
    const Answer a = Generate(cluster_->router_address(), TokenRequest(prompt, 12));
    ASSERT_TRUE(a.status.ok()) << n << ": " << a.status.error_message();
    EXPECT_EQ(a.ids, Offline(prompt, 12, 0, 0)) << "prompt of " << n << " tokens";
    ASSERT_TRUE(a.finished.has_value());
    EXPECT_EQ(a.finished->reason(), ringserve::v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(a.finished->usage().prompt_tokens(), static_cast<uint32_t>(n));
    EXPECT_EQ(a.finished->usage().completion_tokens(), 12u);
    EXPECT_GT(a.finished->timings().prefill_us(), 0u);
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

TEST_F(ClusterTest, SeededSamplingEqualsOfflineGeneration) {
  const auto prompt = PromptOf(64, 3);
  auto req = TokenRequest(prompt, 16, 0.9f, 4242);
  req.mutable_sampling()->set_top_k(40);
  req.mutable_sampling()->set_top_p(0.95f);
  const Answer a = Generate(cluster_->router_address(), req);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  model::GenerateOptions options;
  options.max_tokens = 16;
  options.ignore_eos = true;
  options.sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 4242};
  std::vector<int32_t> p(prompt.begin(), prompt.end());
  auto want = model::Generate(model_, p, options, nullptr);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(a.ids, std::vector<uint32_t>(want->begin(), want->end()));
}

TEST_F(ClusterTest, ThirtyTwoConcurrentClientsAllGetTheirOwnAnswer) {
  constexpr int kClients = 32;
  std::vector<Answer> answers(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      answers[i] = Generate(cluster_->router_address(), TokenRequest(PromptOf(20 + i, i), 6));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(answers[i].status.ok()) << i << ": " << answers[i].status.error_message();
    EXPECT_EQ(answers[i].ids, Offline(PromptOf(20 + i, i), 6, 0, 0)) << "client " << i;
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

TEST_F(ClusterTest, CancelledRequestFreesReservationsAndBuffers) {
  grpc::ClientContext ctx;
  std::thread canceller;
  auto req = TokenRequest(PromptOf(300, 9), 2000);
  auto channel =
      grpc::CreateChannel(cluster_->router_address(), grpc::InsecureChannelCredentials());
  auto stub = ringserve::v1::Generation::NewStub(channel);
  auto reader = stub->Generate(&ctx, req);
  ringserve::v1::GenerateResponse r;
  int deltas = 0;
  while (reader->Read(&r)) {
    if (r.has_delta() && ++deltas == 3) ctx.TryCancel();
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_GE(deltas, 3);
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

TEST_F(ClusterTest, ExpiredDeadlineAnswersDeadlineExceededAndFreesEverything) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(400)));
  const Answer a = Generate(cluster_->router_address(), TokenRequest(PromptOf(50, 2), 5000),
                            absl::ZeroDuration(), &ctx);
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << a.status.error_message();
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

TEST_F(ClusterTest, TextPromptStreamsTextThatEqualsTheDetokenizedIds) {
  ringserve::v1::GenerateRequest req;
  req.set_text("The quick brown fox jumps over the lazy dog. 你好, world! 🦊");
  req.mutable_stopping()->set_max_tokens(24);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(0);
  const Answer a = Generate(cluster_->router_address(), req);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_EQ(a.ids.size(), 24u);
  auto tokenizer = text::Tokenizer::FromDirectory(dir_->path());
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_EQ(a.text, (*tokenizer)->Decode(a.ids));
}

TEST_F(ClusterTest, ChatMessagesUseTheCheckpointTemplate) {
  ringserve::v1::GenerateRequest req;
  auto* m = req.mutable_messages();
  auto* sys = m->add_messages();
  sys->set_role("system");
  sys->set_content("You are terse.");
  auto* user = m->add_messages();
  user->set_role("user");
  user->set_content("Hi!");
  m->set_add_generation_prompt(true);
  req.mutable_stopping()->set_max_tokens(4);
  req.mutable_sampling()->set_temperature(0);
  const Answer a = Generate(cluster_->router_address(), req);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(a.finished.has_value());
  auto tokenizer = text::Tokenizer::FromDirectory(dir_->path());
  auto ids = (*tokenizer)
                 ->Encode(
                     "<role>SYSTEM</role>You are terse.\ndetailed thinking off<|role_end|>"
                     "<role>HUMAN</role>Hi!<|role_end|><role>ASSISTANT</role>");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(a.finished->usage().prompt_tokens(), ids->size());
}

TEST_F(ClusterTest, BadInputThroughThePublicApiGetsInvalidArgument) {
  ringserve::v1::GenerateRequest req;
  req.set_text(std::string("bad \xff\xfe bytes"));
  req.mutable_stopping()->set_max_tokens(4);
  // Protobuf itself refuses invalid UTF-8 in a proto3 string field before the router's handler
  // runs (the README's table says so); the request fails and nothing is left behind.
  Answer a = Generate(cluster_->router_address(), req);
  EXPECT_FALSE(a.status.ok());

  a = Generate(cluster_->router_address(), TokenRequest(PromptOf(131000), 1000));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(a.status.error_message().find("exceeds the model's context of 131072"),
            std::string::npos)
      << a.status.error_message();

  a = Generate(cluster_->router_address(), TokenRequest({1, 2, 5000}, 4));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

TEST_F(ClusterTest, ADuplicateInFlightRequestIdIsRejected) {
  auto first = TokenRequest(PromptOf(30, 1), 3000);
  first.set_request_id("same-id");
  auto channel =
      grpc::CreateChannel(cluster_->router_address(), grpc::InsecureChannelCredentials());
  auto stub = ringserve::v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, first);
  ringserve::v1::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r));  // the first request is in flight now
  auto second = TokenRequest(PromptOf(30, 2), 3);
  second.set_request_id("same-id");
  const Answer a = Generate(cluster_->router_address(), second);
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(a.status.error_message().find("request_id 'same-id' is already in flight"),
            std::string::npos);
  ctx.TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
  EXPECT_TRUE(ClusterSettlesIdle(cluster_));
}

}  // namespace
}  // namespace ringserve::testing
