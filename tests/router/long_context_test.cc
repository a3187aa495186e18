// 128K-token prompts through the real cluster: output equal to the engine in this process, and
// a short prompt submitted behind a long one is answered before the long one finishes prefill.
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

constexpr int kLong = 131072 - 64;

TEST(LongContextTest, A128KPromptMatchesOfflineAndDoesNotBlockAShortOne) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  auto options = ClusterOptions(dir.path(), 1, 1);
  options.worker_args = {"--threads=2", "--metrics-port=-1", "--log-level=warning"};
  auto cluster = cli::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string router = (*cluster)->router_address();

  const std::vector<uint32_t> long_prompt = PromptOf(kLong, 5);
  auto long_request = TokenRequest(long_prompt, 8);
  long_request.set_prefill_progress(true);
  // The long request streams on its own thread; the short one goes in once the long one's
  // prefill has reported progress (so it is queued behind a running 128K prefill).
  Answer long_answer;
  absl::Notification long_started;
  std::thread long_client([&] {
    auto channel = grpc::CreateChannel(router, grpc::InsecureChannelCredentials());
    auto stub = ringserve::v1::Generation::NewStub(channel);
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, long_request);
    ringserve::v1::GenerateResponse r;
    while (reader->Read(&r)) {
      if (r.has_progress() && long_answer.progress_events++ == 0) long_started.Notify();
      if (r.has_delta()) {
        if (long_answer.ids.empty()) long_answer.first_token = absl::Now();
        long_answer.ids.insert(long_answer.ids.end(), r.delta().token_ids().begin(),
                               r.delta().token_ids().end());
      }
      if (r.has_finished()) long_answer.finished = r.finished();
    }
    long_answer.status = reader->Finish();
    if (!long_started.HasBeenNotified()) long_started.Notify();
  });
  long_started.WaitForNotification();
  const Answer short_answer = Generate(router, TokenRequest(PromptOf(100, 6), 4));
  long_client.join();

  ASSERT_TRUE(short_answer.status.ok()) << short_answer.status.error_message();
  ASSERT_TRUE(long_answer.status.ok()) << long_answer.status.error_message();
  EXPECT_GT(long_answer.progress_events, 10);
  EXPECT_LT(short_answer.first_token, long_answer.first_token)
      << "the short prompt waited for the whole 128K prefill";

  kernels::CpuBackend backend(2);
  auto model = model::HybridModel::Load(dir.path(), &backend, {});
  ASSERT_TRUE(model.ok()) << model.status();
  model::GenerateOptions gen;
  gen.max_tokens = 8;
  gen.ignore_eos = true;
  gen.sampling.temperature = 0;
  std::vector<int32_t> p(long_prompt.begin(), long_prompt.end());
  auto want = model::Generate(model->get(), p, gen, nullptr);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(long_answer.ids, std::vector<uint32_t>(want->begin(), want->end()));
  EXPECT_TRUE(ClusterSettlesIdle(cluster->get()));
}

}  // namespace
}  // namespace ringserve::testing
