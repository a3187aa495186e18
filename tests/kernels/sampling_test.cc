#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace ringserve::kernels {
namespace {

int32_t Draw(const std::vector<float>& logits, SamplingParams p) {
  CpuBackend backend(1);
  int32_t id = -1;
  backend.Sample(logits.data(), 1, static_cast<int64_t>(logits.size()), &p, &id);
  return id;
}

const std::vector<float> kLogits = {0.1f, 2.0f, 1.5f, -1.0f, 1.9f};

TEST(SamplingTest, GreedyIsArgmax) {
  EXPECT_EQ(Draw(kLogits, {.temperature = 0.0f}), 1);
  EXPECT_EQ(Draw(kLogits, {.temperature = 1.0f, .top_k = 1}), 1);
  EXPECT_EQ(Draw(kLogits, {.temperature = 1.0f, .top_p = 1e-6f}), 1);
  EXPECT_EQ(Draw(kLogits, {.temperature = 1.0f, .min_p = 1.0f}), 1);
}

// A row without any finite weight (all -inf) has no candidate to draw: sampling keeps the argmax,
// the first index, as greedy does.
TEST(SamplingTest, RowOfMinusInfinityGivesTheArgmax) {
  const std::vector<float> masked(6, -INFINITY);
  EXPECT_EQ(Draw(masked, {.temperature = 0.0f}), 0);
  EXPECT_EQ(Draw(masked, {.temperature = 1.0f, .seed = 3}), 0);
  EXPECT_EQ(Draw(masked, {.temperature = 0.7f, .top_k = 3, .top_p = 0.5f, .min_p = 0.1f}), 0);
}

TEST(SamplingTest, DrawIsAFunctionOfSeedAndPosition) {
  for (uint64_t pos = 0; pos < 50; ++pos) {
    SamplingParams p{.temperature = 1.0f, .seed = 42, .position = pos};
    EXPECT_EQ(Draw(kLogits, p), Draw(kLogits, p));
  }
  int differ = 0;
  for (uint64_t pos = 0; pos < 50; ++pos) {
    differ += Draw(kLogits, {.temperature = 1.0f, .seed = 1, .position = pos}) !=
              Draw(kLogits, {.temperature = 1.0f, .seed = 2, .position = pos});
  }
  EXPECT_GT(differ, 5);
}

TEST(SamplingTest, TopKAndTopPRestrictTheSupport) {
  std::map<int32_t, int> seen_k, seen_p;
  for (uint64_t pos = 0; pos < 400; ++pos) {
    ++seen_k[Draw(kLogits, {.temperature = 1.0f, .top_k = 2, .seed = 3, .position = pos})];
    ++seen_p[Draw(kLogits, {.temperature = 1.0f, .top_p = 0.5f, .seed = 3, .position = pos})];
  }
  EXPECT_EQ(seen_k.size(), 2u);
  EXPECT_TRUE(seen_k.count(1) && seen_k.count(4));
  // Probabilities: 1 -> 0.37, 4 -> 0.33, 2 -> 0.22: top_p 0.5 keeps exactly those two.
  EXPECT_EQ(seen_p.size(), 2u);
}

TEST(SamplingTest, FrequenciesFollowTheDistribution) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  int ones = 0;
  const int n = 4000;
  for (int pos = 0; pos < n; ++pos) {
    ones += Draw(logits, {.temperature = 1.0f, .seed = 9, .position = static_cast<uint64_t>(pos)});
  }
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.03);
}

}  // namespace
}  // namespace ringserve::kernels
