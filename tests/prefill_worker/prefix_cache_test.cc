// The prefill worker's prefix cache through its gRPC service: a real server on port 0 with the
// scheduler, the model and the cache in process; states go to a recording sender.
#include "prefill_worker/prefix_cache.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <vector>

#include "common/rpc/server.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "prefill_worker/scheduler.h"
#include "prefill_worker/service.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::prefill {
namespace {

using ::ringserve::testing::Prompt;

constexpr int64_t kChunk = 16;
constexpr int64_t kPage = 8;

// The bytes of a (host memory) state: position, linear states, then the KV of every token.
std::string Bytes(const model::SequenceState& s) {
  std::string out(reinterpret_cast<const char*>(s.linear_state(0)), s.linear_bytes_total());
  out.append(std::to_string(s.position()));
  for (int64_t l = 0; l < s.num_softmax(); ++l) {
    for (bool value : {false, true}) {
      for (const model::Span& span : s.KvSpans(l, value, 0, s.position())) {
        out.append(static_cast<const char*>(span.data), span.bytes);
      }
    }
  }
  return out;
}

class PrefillPrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::make_unique<kernels::CpuBackend>(2);
    auto model =
        model::HybridModel::Load(ringserve::testing::SharedTinyModelDir(), backend_.get(), {});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    // Room for one 70-token prompt's five checkpoints and KV, not two.
    const size_t bound = 70 * model_->kv_bytes_per_token() + 5 * model_->checkpoint_bytes() + 1;
    auto cache = PrefixCache::Create(model_.get(), {bound, kPage, kChunk});
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    PrefillScheduler::Options options;
    options.chunk_tokens = kChunk;
    options.prefix_cache = cache_.get();
    scheduler_ =
        std::make_unique<PrefillScheduler>(model_.get(), options, [this](const PrefillJob& job) {
          std::lock_guard<std::mutex> lock(mu_);
          sent_[job.request_id] = Bytes(*job.state);
          return absl::OkStatus();
        });
    scheduler_->Start();
    service_ = std::make_unique<PrefillService>(scheduler_.get(), &model_->config(), 1, "fp",
                                                1 << 20, cache_.get());
    auto server = rpc::GrpcServer::Start("127.0.0.1", 0, {}, false, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    service_->set_ready(true);
    stub_ = internal::v1::Prefill::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_->Shutdown(absl::Seconds(1));
    scheduler_->Stop();
  }

  // Prefills `tokens` greedily; returns its Done event.
  internal::v1::PrefillDone Run(const std::string& id, const std::vector<int32_t>& tokens,
                                const std::string& salt = "") {
    internal::v1::PrefillRequest request;
    request.set_request_id(id);
    for (int32_t t : tokens) request.add_tokens(static_cast<uint32_t>(t));
    request.mutable_sampling()->set_temperature(0.0f);
    request.set_decode_address("127.0.0.1:1");
    request.set_ticket("ticket");
    request.set_sample_position(static_cast<uint32_t>(tokens.size()));
    request.set_cache_salt(salt);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Run(&ctx, request);
    internal::v1::PrefillEvent event;
    internal::v1::PrefillDone done;
    while (reader->Read(&event)) {
      if (event.has_done()) done = event.done();
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return done;
  }

  internal::v1::WorkerStatus Status() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    internal::v1::WorkerStatus status;
    EXPECT_TRUE(stub_->GetStatus(&ctx, {}, &status).ok());
    return status;
  }

  std::unique_ptr<kernels::CpuBackend> backend_;
  std::unique_ptr<model::HybridModel> model_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<PrefillScheduler> scheduler_;
  std::unique_ptr<PrefillService> service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<internal::v1::Prefill::Stub> stub_;
  std::mutex mu_;
  std::map<std::string, std::string> sent_;  // the states sent, by request id
};

TEST_F(PrefillPrefixCacheTest, ARepeatedPromptRestoresAndGivesTheColdFirstToken) {
  const std::vector<int32_t> prompt = Prompt(70, 1);
  const internal::v1::PrefillDone cold = Run("cold", prompt);
  EXPECT_EQ(cold.cached_tokens(), 0u);
  // Checkpoints at 16, 32, 48, 64 and 70; the last token is always computed again.
  const internal::v1::PrefillDone warm = Run("warm", prompt);
  EXPECT_EQ(warm.cached_tokens(), 64u);
  EXPECT_EQ(warm.first_token(), cold.first_token());
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_TRUE(sent_.at("warm") == sent_.at("cold"));  // the state handed to decode, bit for bit
  }
  // Another salt shares nothing.
  const internal::v1::PrefillDone other = Run("other", prompt, "tenant");
  EXPECT_EQ(other.cached_tokens(), 0u);
  EXPECT_EQ(other.first_token(), cold.first_token());
  const cache::PrefixTreeStats stats = cache_->stats();
  EXPECT_EQ(stats.lookups, 3u);
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.restored_tokens, 64u);
  EXPECT_EQ(stats.checkpoints, 5);  // the other salt's prompt took the first one's room
  EXPECT_EQ(stats.evicted_checkpoints, 5u);
}

TEST_F(PrefillPrefixCacheTest, AFinishedPromptMakesRoomForTheNext) {
  Run("a", Prompt(70, 1));
  Run("b", Prompt(70, 2));
  EXPECT_EQ(Run("b again", Prompt(70, 2)).cached_tokens(), 64u);
  EXPECT_EQ(Run("a again", Prompt(70, 1)).cached_tokens(), 0u);
  EXPECT_LE(cache_->stats().bytes, cache_->stats().max_bytes);
}

TEST_F(PrefillPrefixCacheTest, AFollowUpRestoresTheEarlierPromptsEnd) {
  const std::vector<int32_t> first = Prompt(70, 1);
  std::vector<int32_t> follow_up = first;
  for (int32_t t : Prompt(25, 2)) follow_up.push_back(t);
  const internal::v1::PrefillDone cold = Run("cold", follow_up, "elsewhere");
  Run("first", first);
  const internal::v1::PrefillDone warm = Run("warm", follow_up);
  EXPECT_EQ(cold.cached_tokens(), 0u);
  EXPECT_EQ(warm.cached_tokens(), 70u);
  EXPECT_EQ(warm.first_token(), cold.first_token());
}

TEST_F(PrefillPrefixCacheTest, StatusListsTheCheckpointedPrefixes) {
  const std::vector<int32_t> prompt = Prompt(70, 1);
  EXPECT_EQ(Status().prefix_cache().version(), 0u);
  Run("a", prompt, "s");
  const internal::v1::PrefixCacheSummary summary = Status().prefix_cache();
  EXPECT_EQ(summary.page_tokens(), static_cast<uint32_t>(kPage));
  EXPECT_EQ(summary.checkpoint_tokens(), static_cast<uint32_t>(kChunk));
  EXPECT_GT(summary.version(), 0u);
  EXPECT_GT(summary.bytes_used(), 0u);
  EXPECT_EQ(summary.bytes_limit(), cache_->stats().max_bytes);
  const std::vector<uint64_t> hashes = cache::PrefixHashes("s", prompt, kPage);
  // The end checkpoint (70) is reported at its last whole page, 64, which is also a checkpoint.
  const std::vector<uint64_t> want = {hashes[7], hashes[5], hashes[3], hashes[1]};
  EXPECT_EQ(std::vector<uint64_t>(summary.prefix_hashes().begin(), summary.prefix_hashes().end()),
            want);
  EXPECT_FALSE(summary.truncated());
}

}  // namespace
}  // namespace ringserve::prefill
