#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace ringserve::kernels {
namespace {

constexpr int64_t kHeads = 3;
constexpr int64_t kDim = 16;

struct Inputs {
  std::vector<float> q, k, v;  // [T, H, D]
  std::vector<float> log_decay;
};

Inputs RandomInputs(int64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Inputs in;
  for (auto* vec : {&in.q, &in.k, &in.v}) {
    vec->resize(tokens * kHeads * kDim);
    for (auto& x : *vec) x = u(rng);
  }
  in.log_decay = {-0.7f, -0.05f, -0.001f};
  return in;
}

// The naive quadratic form in double (model-spec 3.3): outputs [T, H, D] and the final state.
void Naive(const Inputs& in, int64_t tokens, float scale, std::vector<double>* out,
           std::vector<double>* state) {
  out->assign(tokens * kHeads * kDim, 0.0);
  state->assign(kHeads * kDim * kDim, 0.0);
  for (int64_t h = 0; h < kHeads; ++h) {
    const double g = in.log_decay[h];
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t x = 0; x < kDim; ++x) {
          dot += double(in.q[(t * kHeads + h) * kDim + x]) * in.k[(j * kHeads + h) * kDim + x];
        }
        for (int64_t x = 0; x < kDim; ++x) {
          (*out)[(t * kHeads + h) * kDim + x] +=
              scale * std::exp(g * (t - j)) * dot * in.v[(j * kHeads + h) * kDim + x];
        }
      }
    }
    for (int64_t j = 0; j < tokens; ++j) {
      const double w = std::exp(g * (tokens - 1 - j));
      for (int64_t a = 0; a < kDim; ++a) {
        for (int64_t b = 0; b < kDim; ++b) {
          (*state)[(h * kDim + a) * kDim + b] +=
              w * in.k[(j * kHeads + h) * kDim + a] * in.v[(j * kHeads + h) * kDim + b];
        }
      }
    }
  }
}

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 1e-6;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * scale) << "index " << i;
  }
}

class LinearAttentionTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(LinearAttentionTest, ChunkedRecurrentAndNaiveAgree) {
  const auto [tokens, block] = GetParam();
  CpuBackend backend(2);
  const Inputs in = RandomInputs(tokens, static_cast<uint32_t>(tokens * 31 + block));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  std::vector<double> want_out, want_state;
  Naive(in, tokens, scale, &want_out, &want_state);

  // Chunked, with the prompt split into two calls so the state is carried across them.
  std::vector<float> out(tokens * kHeads * kDim), state(kHeads * kDim * kDim, 0.0f);
  const int64_t split = tokens / 3;
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, tokens}}) {
    if (end == begin) continue;
    const int64_t row = begin * kHeads * kDim;
    backend.LinearAttention({in.q.data() + row, in.k.data() + row, in.v.data() + row, kHeads * kDim,
                             out.data() + row, state.data(), in.log_decay.data(), end - begin,
                             kHeads, kDim, scale, block});
  }
  ExpectClose(out, want_out, 1e-5);
  ExpectClose(state, want_state, 1e-5);

  // Recurrent: one decode step per token.
  std::vector<float> rec_out(tokens * kHeads * kDim), rec_state(kHeads * kDim * kDim, 0.0f);
  float* states[] = {rec_state.data()};
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = t * kHeads * kDim;
    backend.LinearAttentionDecode({in.q.data() + row, in.k.data() + row, in.v.data() + row,
                                   kHeads * kDim, rec_out.data() + row, states, in.log_decay.data(),
                                   1, kHeads, kDim, scale});
  }
  ExpectClose(rec_out, want_out, 1e-5);
  ExpectClose(rec_state, want_state, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(LengthsAndBlocks, LinearAttentionTest,
                         ::testing::Combine(::testing::Values(1, 5, 63, 64, 65, 130, 257),
                                            ::testing::Values(16, 64)));

}  // namespace
}  // namespace ringserve::kernels
