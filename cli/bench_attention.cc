// ringctl bench-attention: one attention layer's core at a preset's shapes over long sequences:
// the chunked linear-attention kernel (prefill), the same recurrence run token by token with the
// decode kernel, and causal softmax attention (measured up to a length bound, projected
// quadratically beyond it). Checks that the chunked and recurrent outputs agree.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "common/model/make_model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/sampling.h"
#include "nlohmann/json.hpp"

namespace ringserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double Seconds(F f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// max |a - b| / max |b|: the largest difference relative to the largest output.
double MaxRelativeDifference(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

absl::Status BenchAttention(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl bench-attention");
  flags.String("preset", "small", "model preset whose attention shapes are used");
  flags.String("lengths", "4096,8192,16384,32768,65536,131072", "sequence lengths");
  flags.String("softmax-max-length", "32768",
               "longest length softmax attention runs at; longer ones are projected");
  flags.String("threads", "0", "CPU threads (0 = all cores)");
  flags.String("repeat", "3", "runs of each measurement (min/median/max are reported)");
  flags.Bool("json", false, "print one JSON object (progress goes to stderr)");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const model::ModelConfig c, model::PresetConfig(flags.Get("preset")));
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths, flags.GetIntList("lengths"));
  ASSIGN_OR_RETURN(const int64_t softmax_max, flags.GetInt("softmax-max-length"));
  ASSIGN_OR_RETURN(const int64_t threads, flags.GetInt("threads"));
  ASSIGN_OR_RETURN(const int64_t repeat, flags.GetInt("repeat"));
  const bool json = flags.GetBool("json");
  std::sort(lengths.begin(), lengths.end());
  if (lengths.empty() || lengths.front() < 1 || repeat < 1) {
    return absl::InvalidArgumentError("--lengths must be positive and --repeat at least 1");
  }
  if (lengths.back() > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("length ", lengths.back(),
                                                   " exceeds the preset's context of ",
                                                   c.max_position_embeddings, " tokens"));
  }
  FILE* progress = json ? stderr : stdout;
  const int64_t h = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
  const int64_t max_len = lengths.back();
  int64_t softmax_len = 0;  // the longest length softmax attention runs at
  for (int64_t n : lengths) {
    if (n <= softmax_max) softmax_len = n;
  }
  // One fused [T, 3 * H * D] buffer of q, k, v rows serves every length (a prefix of it);
  // softmax attention reads its kv heads from the first Hkv heads of k and v.
  const int64_t ld = 3 * h * d;
  std::vector<float> qkv(static_cast<size_t>(max_len * ld));
  const float amp = std::sqrt(3.0f);  // unit variance, as after the q/k norms
  for (size_t i = 0; i < qkv.size(); ++i) {
    const uint64_t bits = kernels::SplitMix64(i);
    qkv[i] = amp * (static_cast<float>(bits >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f);
  }
  std::vector<float> chunked(static_cast<size_t>(max_len * h * d));
  std::vector<float> recurrent(chunked.size());
  std::vector<float> softmax(static_cast<size_t>(softmax_len * h * d));
  std::vector<uint16_t> k_cache(static_cast<size_t>(hkv * softmax_len * d));
  std::vector<uint16_t> v_cache(k_cache.size());
  std::vector<float> state(static_cast<size_t>(h * d * d));
  const std::vector<float> log_decay = c.LogDecay(0, model::DecayVariant::kSglang);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  kernels::CpuBackend backend(static_cast<int>(threads));

  nlohmann::ordered_json out;
  out["preset"] = flags.Get("preset");
  out["heads"] = h;
  out["kv_heads"] = hkv;
  out["head_dim"] = d;
  out["threads"] = backend.threads();
  out["repeat"] = repeat;
  out["softmax_max_length"] = softmax_len;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  std::vector<double> softmax_at_max;  // runs at softmax_len, the base of the projection
  for (int64_t n : lengths) {
    std::vector<double> t_chunked, t_recurrent, t_softmax;
    double rel_diff = 0;
    for (int64_t r = 0; r < repeat; ++r) {
      std::fill(state.begin(), state.end(), 0.0f);
      t_chunked.push_back(Seconds([&] {
        backend.LinearAttention({qkv.data(), qkv.data() + h * d, qkv.data() + 2 * h * d, ld,
                                 chunked.data(), state.data(), log_decay.data(), n, h, d, scale});
      }));
      std::fill(state.begin(), state.end(), 0.0f);
      float* states[] = {state.data()};
      t_recurrent.push_back(Seconds([&] {
        for (int64_t t = 0; t < n; ++t) {
          const float* row = qkv.data() + t * ld;
          backend.LinearAttentionDecode({row, row + h * d, row + 2 * h * d, ld,
                                         recurrent.data() + t * h * d, states, log_decay.data(), 1,
                                         h, d, scale});
        }
      }));
      if (r == 0) rel_diff = MaxRelativeDifference(chunked.data(), recurrent.data(), n * h * d);
      if (n <= softmax_len) {
        t_softmax.push_back(Seconds([&] {
          backend.SoftmaxAttention({qkv.data(), qkv.data() + h * d, qkv.data() + 2 * h * d, ld,
                                    softmax.data(), k_cache.data(), v_cache.data(), n, 0, n, h, hkv,
                                    d, scale});
        }));
      }
    }
    const bool projected = softmax_len > 0 && n > softmax_len;
    if (n == softmax_len) softmax_at_max = t_softmax;
    if (projected) {
      const double f = static_cast<double>(n) / static_cast<double>(softmax_len);
      for (double s : softmax_at_max) t_softmax.push_back(s * f * f);
    }
    std::vector<double> vs_recurrent, vs_softmax;
    for (int64_t r = 0; r < repeat; ++r) {
      vs_recurrent.push_back(t_recurrent[r] / t_chunked[r]);
      if (!t_softmax.empty()) vs_softmax.push_back(t_softmax[r] / t_chunked[r]);
    }
    const Spread chunked_s = SpreadOf(t_chunked), recurrent_s = SpreadOf(t_recurrent),
                 softmax_s = SpreadOf(t_softmax), speedup_rec = SpreadOf(vs_recurrent),
                 speedup_soft = SpreadOf(vs_softmax);
    nlohmann::ordered_json row;
    row["tokens"] = n;
    row["chunked_seconds"] = SpreadJson(chunked_s);
    row["recurrent_seconds"] = SpreadJson(recurrent_s);
    row["softmax_seconds"] = t_softmax.empty() ? nlohmann::ordered_json() : SpreadJson(softmax_s);
    row["softmax_projected"] = projected;
    row["chunked_speedup_vs_recurrent"] = SpreadJson(speedup_rec);
    row["chunked_speedup_vs_softmax"] =
        t_softmax.empty() ? nlohmann::ordered_json() : SpreadJson(speedup_soft);
    row["chunked_vs_recurrent_max_rel_diff"] = rel_diff;
    rows.push_back(row);
    const std::string softmax_text =
        t_softmax.empty() ? std::string("softmax not run")
                          : absl::StrFormat("softmax%s %.3f/%.3f/%.3f s (x%.1f/%.1f/%.1f)",
                                            projected ? " PROJECTED (n^2)" : "", softmax_s.min,
                                            softmax_s.median, softmax_s.max, speedup_soft.min,
                                            speedup_soft.median, speedup_soft.max);
    std::fprintf(progress,
                 "attention %6lld tokens: chunked %.3f/%.3f/%.3f s  recurrent %.3f/%.3f/%.3f s"
                 " (x%.2f/%.2f/%.2f)  %s  max rel diff %.2e\n",
                 static_cast<long long>(n), chunked_s.min, chunked_s.median, chunked_s.max,
                 recurrent_s.min, recurrent_s.median, recurrent_s.max, speedup_rec.min,
                 speedup_rec.median, speedup_rec.max, softmax_text.c_str(), rel_diff);
    std::fflush(progress);
  }
  out["lengths"] = rows;
  if (json) std::printf("%s\n", out.dump().c_str());
  return absl::OkStatus();
}

}  // namespace

int RunBenchAttention(const std::vector<std::string>& args) { return Report(BenchAttention(args)); }

}  // namespace ringserve::cli
