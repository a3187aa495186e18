// The prefix cache in real processes: a router, a prefill worker with a small chunk and a
// decode worker on loopback. A repeated prompt gets the same answer, and the prefill worker
// reports the prompt's checkpointed prefixes in its status.
#include <algorithm>

#include "common/cache/prefix_tree.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

TEST(PrefixCacheClusterTest, ARepeatedPromptIsCheckpointedAndAnsweredTheSame) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  cli::LocalCluster::Options options = ClusterOptions(dir.path(), 1, 1);
  options.prefill_args = {"--chunk-tokens=64"};
  auto cluster = cli::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::vector<uint32_t> prompt = PromptOf(300, 5);
  const Answer cold = Generate((*cluster)->router_address(), TokenRequest(prompt, 8));
  const Answer warm = Generate((*cluster)->router_address(), TokenRequest(prompt, 8));
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.ids, cold.ids);

  const internal::v1::PrefixCacheSummary summary =
      WorkerStatusOf((*cluster)->Find("prefill", 0)->address, true).prefix_cache();
  EXPECT_EQ(summary.page_tokens(), 64u);
  EXPECT_EQ(summary.checkpoint_tokens(), 64u);
  EXPECT_GT(summary.bytes_used(), 0u);
  EXPECT_EQ(summary.bytes_limit(), uint64_t{2048} << 20);  // the default
  const std::vector<int32_t> ids(prompt.begin(), prompt.end());
  const std::vector<uint64_t> hashes = cache::PrefixHashes("", ids, 64);
  ASSERT_EQ(hashes.size(), 4u);
  for (uint64_t h : hashes) {
    EXPECT_NE(std::find(summary.prefix_hashes().begin(), summary.prefix_hashes().end(), h),
              summary.prefix_hashes().end());
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster->get()));
}

}  // namespace
}  // namespace ringserve::testing
