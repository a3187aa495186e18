// CPU softmax attention: the decode path (direct dot products over the bf16 cache) and the
// prefill path (flash-style GEMM blocks) against a double-precision reference, over GQA shapes
// and cache lengths around the key-block boundaries.
#include <cmath>
#include <random>
#include <vector>

#include "common/base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"

namespace ringserve::kernels {
namespace {

struct Shape {
  int64_t heads, kv_heads, head_dim, past, tokens;
};

class SoftmaxAttentionTest : public ::testing::TestWithParam<Shape> {};

TEST_P(SoftmaxAttentionTest, DecodeAndPrefillPathsMatchTheReference) {
  const Shape sh = GetParam();
  const int64_t total = sh.past + sh.tokens, d = sh.head_dim, group = sh.heads / sh.kv_heads;
  const int64_t ld = (sh.heads + 2 * sh.kv_heads) * d;  // q, k, v of a token side by side
  std::mt19937 rng(static_cast<uint32_t>(total * 131 + d));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> qkv(total * ld);
  for (float& x : qkv) x = normal(rng);
  std::vector<uint16_t> k_cache(sh.kv_heads * total * d), v_cache(k_cache.size());
  std::vector<float> out(total * sh.heads * d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  auto params = [&](int64_t past, int64_t tokens) {
    const float* row = qkv.data() + past * ld;
    return SoftmaxAttentionParams{row,
                                  row + sh.heads * d,
                                  row + (sh.heads + sh.kv_heads) * d,
                                  ld,
                                  out.data() + past * sh.heads * d,
                                  k_cache.data(),
                                  v_cache.data(),
                                  total,
                                  past,
                                  tokens,
                                  sh.heads,
                                  sh.kv_heads,
                                  d,
                                  scale};
  };
  CpuBackend backend(2);
  if (sh.past > 0) backend.SoftmaxAttention(params(0, sh.past));  // prefill path fills the cache
  backend.SoftmaxAttention(params(sh.past, sh.tokens));           // the path under test

  // The same rows through the other path: the block kernel when the backend took the direct
  // one, and the other way round.
  const SoftmaxAttentionParams p = params(sh.past, sh.tokens);
  std::vector<float> backend_out(out.begin() + sh.past * sh.heads * d, out.end());
  for (int64_t g = 0; g < sh.kv_heads; ++g) {
    if (sh.tokens <= 4) {
      cpu::SoftmaxAttentionBlock(p, g, 0, sh.tokens);
    } else {
      for (int64_t t = 0; t < sh.tokens; ++t) cpu::SoftmaxAttentionQuery(p, g, t);
    }
  }
  for (int64_t t = 0; t < sh.tokens; ++t) {
    for (int64_t h = 0; h < sh.heads; ++h) {
      const int64_t g = h / group;
      const float* q = qkv.data() + (sh.past + t) * ld + h * d;
      // Reference in double over the bf16-rounded keys and values.
      std::vector<double> w(sh.past + t + 1);
      double m = -1e300, sum = 0;
      for (int64_t j = 0; j <= sh.past + t; ++j) {
        const float* k = qkv.data() + j * ld + (sh.heads + g) * d;
        double dot = 0;
        for (int64_t x = 0; x < d; ++x) dot += double{q[x]} * base::RoundToBf16(k[x]);
        w[j] = dot * scale;
        m = std::max(m, w[j]);
      }
      for (double& x : w) sum += (x = std::exp(x - m));
      for (int64_t x = 0; x < d; ++x) {
        double ref = 0;
        for (int64_t j = 0; j <= sh.past + t; ++j) {
          ref += w[j] / sum * base::RoundToBf16(qkv[j * ld + (sh.heads + sh.kv_heads + g) * d + x]);
        }
        const int64_t i = (t * sh.heads + h) * d + x;
        ASSERT_NEAR(backend_out[i], ref, 2e-5 + 1e-4 * std::fabs(ref)) << "t " << t << " h " << h;
        ASSERT_NEAR(out[sh.past * sh.heads * d + i], ref, 2e-5 + 1e-4 * std::fabs(ref))
            << "other path, t " << t << " h " << h;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SoftmaxAttentionTest,
                         ::testing::Values(Shape{2, 1, 32, 0, 1}, Shape{2, 1, 32, 1, 1},
                                           Shape{8, 2, 128, 255, 1}, Shape{8, 2, 128, 256, 1},
                                           Shape{8, 2, 128, 1000, 3}, Shape{4, 4, 64, 513, 4},
                                           Shape{8, 2, 128, 300, 70}, Shape{2, 1, 32, 0, 130}));

// The batched decode op equals SoftmaxAttention of one token per sequence, bit for bit, for
// sequences of different lengths and capacities (caches and outputs both).
TEST(SoftmaxAttentionDecodeTest, EqualsOneSequenceAtATime) {
  constexpr int64_t kHeads = 8, kKvHeads = 2, kD = 64;
  constexpr int64_t kLd = (kHeads + 2 * kKvHeads) * kD;
  const std::vector<int64_t> pasts = {0, 37, 300};
  const std::vector<int64_t> capacities = {4, 40, 512};
  const int64_t batch = static_cast<int64_t>(pasts.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> history(512 * kLd), step(batch * kLd);
  for (float& x : history) x = normal(rng);
  for (float& x : step) x = normal(rng);
  CpuBackend backend(2);
  // Per sequence: [k_cache, v_cache] for the batched run and for the one-at-a-time run.
  std::vector<std::vector<uint16_t>> caches;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<uint16_t> k(kKvHeads * capacities[b] * kD), v(k.size());
    std::vector<float> scratch(std::max<int64_t>(pasts[b], 1) * kHeads * kD);
    if (pasts[b] > 0) {
      backend.SoftmaxAttention({history.data(), history.data() + kHeads * kD,
                                history.data() + (kHeads + kKvHeads) * kD, kLd, scratch.data(),
                                k.data(), v.data(), capacities[b], 0, pasts[b], kHeads, kKvHeads,
                                kD, scale});
    }
    for (int copy = 0; copy < 2; ++copy) {
      caches.push_back(k);
      caches.push_back(v);
    }
  }
  std::vector<KvCacheRef> refs;
  for (int64_t b = 0; b < batch; ++b) {
    refs.push_back({caches[4 * b].data(), caches[4 * b + 1].data(), capacities[b], pasts[b]});
  }
  std::vector<float> batched(batch * kHeads * kD), single(batched.size());
  backend.SoftmaxAttentionDecode({step.data(), step.data() + kHeads * kD,
                                  step.data() + (kHeads + kKvHeads) * kD, kLd, batched.data(),
                                  refs.data(), batch, kHeads, kKvHeads, kD, scale});
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = step.data() + b * kLd;
    backend.SoftmaxAttention({row, row + kHeads * kD, row + (kHeads + kKvHeads) * kD, kLd,
                              single.data() + b * kHeads * kD, caches[4 * b + 2].data(),
                              caches[4 * b + 3].data(), capacities[b], pasts[b], 1, kHeads,
                              kKvHeads, kD, scale});
    EXPECT_EQ(caches[4 * b], caches[4 * b + 2]) << "keys of sequence " << b;
    EXPECT_EQ(caches[4 * b + 1], caches[4 * b + 3]) << "values of sequence " << b;
  }
  EXPECT_EQ(batched, single);
}

}  // namespace
}  // namespace ringserve::kernels
