// Google Benchmark micro benchmarks of the CPU backend's kernels at the `small` preset's shapes,
// each reporting FLOP/s or bytes/s (rates over wall time: the backend uses every core). Pass the
// usual --benchmark_filter / --benchmark_format flags.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/base/bf16.h"
#include "common/model/make_model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/sampling.h"

namespace ringserve {
namespace {

const model::ModelConfig& Config() {
  static const model::ModelConfig* config = new model::ModelConfig(*model::PresetConfig("small"));
  return *config;
}

kernels::CpuBackend& Backend() {
  static kernels::CpuBackend* backend = new kernels::CpuBackend(0);
  return *backend;
}

// Deterministic values uniform in [-amp, amp].
std::vector<float> Random(size_t n, float amp, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t bits = kernels::SplitMix64(seed ^ kernels::SplitMix64(i));
    v[i] = amp * (static_cast<float>(bits >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f);
  }
  return v;
}

void SetRates(benchmark::State& state, double flops, double bytes) {
  const double n = static_cast<double>(state.iterations());
  if (flops > 0)
    state.counters["FLOP/s"] = benchmark::Counter(flops * n, benchmark::Counter::kIsRate);
  if (bytes > 0) {
    state.counters["bytes/s"] = benchmark::Counter(bytes * n, benchmark::Counter::kIsRate);
  }
}

// `v` rounded to bf16, as a checkpoint stores it.
std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = base::FloatToBf16(v[i]);
  return out;
}

// y[m, n] = x[m, k] w[n, k]^T: args m, n, k and the weight's dtype (0 fp32, 1 bf16 as the CPU
// engine reads it); m = 1 is the decode matvec. bytes/s counts the weight as stored.
void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool bf16 = state.range(3) != 0;
  const std::vector<float> x = Random(m * k, 1.0f, 1), w = Random(n * k, 0.02f, 2);
  const std::vector<uint16_t> w16 = ToBf16(w);
  std::vector<float> y(m * n);
  const kernels::Weight weight = bf16 ? kernels::Weight{w16.data(), n, k, base::DType::kBF16}
                                      : kernels::Weight{w.data(), n, k, base::DType::kF32};
  for (auto _ : state) {
    Backend().Gemm({x.data(), m, k, &weight, y.data(), n, false});
    benchmark::DoNotOptimize(y.data());
  }
  SetRates(state, 2.0 * m * n * k, static_cast<double>(weight.bytes()));
}
BENCHMARK(BM_Gemm)
    ->ArgsProduct({{1, 16, 512}, {4096}, {1024}, {0, 1}})  // one token, decode batch 16, a chunk
    ->Args({1, 32768, 1024, 0})                            // lm_head, one token
    ->Args({1, 32768, 1024, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// RMSNorm of `rows` hidden vectors.
void BM_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = Config().hidden_size;
  std::vector<float> x = Random(rows * cols, 1.0f, 3), y(rows * cols);
  const std::vector<float> w = Random(cols, 1.0f, 4);
  for (auto _ : state) {
    Backend().RmsNorm({x.data(), cols, y.data(), cols, w.data(), rows, cols, 1, 1e-6f});
    benchmark::DoNotOptimize(y.data());
  }
  SetRates(state, 0, 8.0 * rows * cols);
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(2048)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Chunked linear attention (the prefill kernel) over T tokens of one sequence.
void BM_LinearAttentionChunked(benchmark::State& state) {
  const model::ModelConfig& c = Config();
  const int64_t t = state.range(0), h = c.num_attention_heads, d = c.head_dim;
  const std::vector<float> qkv = Random(t * 3 * h * d, 1.7f, 5);
  std::vector<float> out(t * h * d), s(h * d * d);
  const std::vector<float> decay = c.LogDecay(0, model::DecayVariant::kSglang);
  for (auto _ : state) {
    std::fill(s.begin(), s.end(), 0.0f);
    Backend().LinearAttention({qkv.data(), qkv.data() + h * d, qkv.data() + 2 * h * d, 3 * h * d,
                               out.data(), s.data(), decay.data(), t, h, d,
                               1.0f / std::sqrt(static_cast<float>(d))});
    benchmark::DoNotOptimize(out.data());
  }
  SetRates(state, static_cast<double>(t) * h * (4.0 * d * d + 4.0 * 64 * d), 0);
}
BENCHMARK(BM_LinearAttentionChunked)
    ->Arg(512)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// One linear-attention decode step of `batch` sequences: reads and writes each [H, D, D] state.
void BM_LinearAttentionDecode(benchmark::State& state) {
  const model::ModelConfig& c = Config();
  const int64_t b = state.range(0), h = c.num_attention_heads, d = c.head_dim;
  const std::vector<float> qkv = Random(b * 3 * h * d, 1.7f, 6);
  std::vector<float> out(b * h * d), s(b * h * d * d, 0.0f);
  std::vector<float*> states(b);
  for (int64_t i = 0; i < b; ++i) states[i] = s.data() + i * h * d * d;
  const std::vector<float> decay = c.LogDecay(0, model::DecayVariant::kSglang);
  for (auto _ : state) {
    Backend().LinearAttentionDecode({qkv.data(), qkv.data() + h * d, qkv.data() + 2 * h * d,
                                     3 * h * d, out.data(), states.data(), decay.data(), b, h, d,
                                     1.0f / std::sqrt(static_cast<float>(d))});
    benchmark::DoNotOptimize(out.data());
  }
  SetRates(state, 4.0 * b * h * d * d, 8.0 * b * h * d * d);
}
BENCHMARK(BM_LinearAttentionDecode)->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Causal softmax attention: `tokens` new queries after `past` cached positions (args tokens,
// past): tokens = past-free prefill, or one decode token over a long cache.
void BM_SoftmaxAttention(benchmark::State& state) {
  const model::ModelConfig& c = Config();
  const int64_t t = state.range(0), past = state.range(1);
  const int64_t h = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
  const int64_t ld = (h + 2 * hkv) * d;
  const std::vector<float> qkv = Random(t * ld, 1.7f, 7);
  std::vector<float> out(t * h * d);
  std::vector<uint16_t> k_cache(hkv * (past + t) * d, 0x3f80), v_cache(k_cache.size(), 0x3f80);
  for (auto _ : state) {
    Backend().SoftmaxAttention({qkv.data(), qkv.data() + h * d, qkv.data() + (h + hkv) * d, ld,
                                out.data(), k_cache.data(), v_cache.data(), past + t, past, t, h,
                                hkv, d, 1.0f / std::sqrt(static_cast<float>(d))});
    benchmark::DoNotOptimize(out.data());
  }
  const double pairs = static_cast<double>(t) * past + t * (t + 1) / 2.0;
  SetRates(state, 4.0 * h * d * pairs, 2.0 * 2 * hkv * d * static_cast<double>(past + t));
}
BENCHMARK(BM_SoftmaxAttention)
    ->Args({1024, 0})
    ->Args({4096, 0})
    ->Args({1, 4096})
    ->Args({1, 32768})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Group-limited top-k routing of `tokens` rows of router logits.
void BM_MoeRoute(benchmark::State& state) {
  const model::ModelConfig& c = Config();
  const int64_t t = state.range(0), e = c.num_experts, k = c.num_experts_per_tok;
  const std::vector<float> logits = Random(t * e, 2.0f, 8), bias = Random(e, 0.01f, 9);
  std::vector<int32_t> ids(t * k);
  std::vector<float> weights(t * k);
  for (auto _ : state) {
    Backend().MoeRoute({logits.data(), bias.data(), ids.data(), weights.data(), t, e, k, c.n_group,
                        c.topk_group, static_cast<float>(c.routed_scaling_factor)});
    benchmark::DoNotOptimize(ids.data());
  }
  SetRates(state, 0, 4.0 * t * e);
}
BENCHMARK(BM_MoeRoute)->Arg(1)->Arg(2048)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The routed experts (SwiGLU GEMMs, bf16 weights) of `tokens` tokens, each routed to top-k of all
// experts.
void BM_MoeExperts(benchmark::State& state) {
  const model::ModelConfig& c = Config();
  const int64_t t = state.range(0), hd = c.hidden_size, inter = c.moe_intermediate_size;
  const int64_t e = c.num_experts, k = c.num_experts_per_tok;
  const std::vector<uint16_t> gu = ToBf16(Random(e * 2 * inter * hd, 0.02f, 10));
  const std::vector<uint16_t> dn = ToBf16(Random(e * hd * inter, 0.02f, 11));
  std::vector<kernels::Weight> gate_up, down;
  for (int64_t i = 0; i < e; ++i) {
    gate_up.push_back({gu.data() + i * 2 * inter * hd, 2 * inter, hd, base::DType::kBF16});
    down.push_back({dn.data() + i * hd * inter, hd, inter, base::DType::kBF16});
  }
  const std::vector<float> x = Random(t * hd, 1.0f, 12);
  std::vector<float> y(t * hd);
  std::vector<int32_t> ids(t * k);
  std::vector<float> weights(t * k, 1.0f / static_cast<float>(k));
  for (int64_t i = 0; i < t * k; ++i) {
    ids[i] = static_cast<int32_t>(kernels::SplitMix64(i) % static_cast<uint64_t>(e));
  }
  std::vector<bool> used(e, false);
  for (int32_t id : ids) used[id] = true;
  const double experts = static_cast<double>(std::count(used.begin(), used.end(), true));
  for (auto _ : state) {
    Backend().MoeExperts(
        {x.data(), y.data(), ids.data(), weights.data(), t, hd, k, &gate_up, &down});
    benchmark::DoNotOptimize(y.data());
  }
  SetRates(state, 2.0 * t * k * 3 * inter * hd, experts * 3 * inter * hd * 2);
}
BENCHMARK(BM_MoeExperts)->Arg(1)->Arg(16)->Arg(512)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace ringserve

BENCHMARK_MAIN();
