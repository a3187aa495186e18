// ringctl bench-engine: prefill and decode speed of the engine beside limits measured in the
// same run (memory read bandwidth, sgemm peak at the same thread count).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "kernels/cpu/probes.h"
#include "nlohmann/json.hpp"

namespace ringserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Parameters of the GEMMs one token runs through (router and lm_head included), counting
// the experts a token activates.
double ActiveGemmParams(const model::ModelConfig& c) {
  const double hd = static_cast<double>(c.hidden_size);
  const double inner = static_cast<double>(c.num_attention_heads * c.head_dim);
  double p = 0;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    p += (c.IsSoftmaxLayer(i) ? c.softmax_qkv_rows() : 4 * inner) * hd + hd * inner;
    if (c.IsMoeLayer(i)) {
      p += c.num_experts * hd +
           3.0 * hd * (c.num_experts_per_tok * c.moe_intermediate_size + c.shared_intermediate());
    } else {
      p += 3.0 * hd * c.intermediate_size;
    }
  }
  return p;
}

// FLOPs of a prefill of `tokens` tokens: GEMMs, chunked linear attention (block 64), causal
// softmax attention, and the lm_head of the last token.
double PrefillFlops(const model::ModelConfig& c, double tokens) {
  const double d = static_cast<double>(c.head_dim), h = static_cast<double>(c.num_attention_heads);
  const double block = 64;
  double flops = 2.0 * ActiveGemmParams(c) * tokens;
  flops += c.num_linear_layers() * h * tokens * (4 * d * d + 4 * block * d);
  flops += c.num_softmax_layers() * h * 4 * d * tokens * (tokens + 1) / 2;
  flops += 2.0 * c.vocab_size * c.hidden_size;
  return flops;
}

// Bytes one decode step must read at batch `batch` and context `context`: fp32 weights
// (experts counted once per distinct expert, at most all of them), the linear states (read and
// written), the bf16 KV cache and the lm_head.
double DecodeBytes(const model::ModelConfig& c, int64_t batch, int64_t context) {
  const double hd = static_cast<double>(c.hidden_size);
  const double inner = static_cast<double>(c.num_attention_heads * c.head_dim);
  double params = 0;
  const double experts =
      std::min<double>(c.num_experts, static_cast<double>(batch * c.num_experts_per_tok));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    params += (c.IsSoftmaxLayer(i) ? c.softmax_qkv_rows() : 4 * inner) * hd + hd * inner;
    if (c.IsMoeLayer(i)) {
      params += c.num_experts * hd +
                3.0 * hd * (experts * c.moe_intermediate_size + c.shared_intermediate());
    } else {
      params += 3.0 * hd * c.intermediate_size;
    }
  }
  params += static_cast<double>(c.vocab_size) * hd;
  const double state =
      2.0 * 4 * c.num_linear_layers() * c.num_attention_heads * c.head_dim * c.head_dim;
  const double kv = 2.0 * 2 * c.num_softmax_layers() * c.num_key_value_heads * c.head_dim *
                    static_cast<double>(context);
  return 4.0 * params + batch * (state + kv);
}

absl::Status BenchEngine(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl bench-engine");
  AddEngineFlags(&flags);
  flags.String("lengths", "1024,4096,16384", "prompt lengths to prefill");
  flags.String("decode-context", "4096", "context length of the decode measurement");
  flags.String("decode-steps", "16", "decode steps timed per batch size");
  flags.String("batches", "1,16", "decode batch sizes");
  flags.Bool("json", false, "print one JSON object");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const std::vector<int64_t> lengths, flags.GetIntList("lengths"));
  ASSIGN_OR_RETURN(const std::vector<int64_t> batches, flags.GetIntList("batches"));
  ASSIGN_OR_RETURN(const int64_t context, flags.GetInt("decode-context"));
  ASSIGN_OR_RETURN(const int64_t steps, flags.GetInt("decode-steps"));
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk-tokens"));
  ASSIGN_OR_RETURN(const int64_t threads_flag, flags.GetInt("threads"));
  ASSIGN_OR_RETURN(Engine engine, LoadEngine(flags));
  const model::ModelConfig& c = engine.model->config();
  const int threads = threads_flag > 0 ? static_cast<int>(threads_flag)
                                       : static_cast<int>(std::thread::hardware_concurrency());
  const kernels::MachineLimits limits = kernels::ProbeMachine(threads);
  nlohmann::ordered_json out;
  out["threads"] = threads;
  out["read_bandwidth_gbs"] = limits.read_bandwidth_gbs;
  out["sgemm_gflops"] = limits.sgemm_gflops;
  out["active_gemm_params"] = ActiveGemmParams(c);

  auto tokens_of = [&](int64_t n) {
    std::vector<int32_t> t(n);
    for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);
    return t;
  };
  nlohmann::ordered_json prefill = nlohmann::ordered_json::array();
  double base_seconds = 0, base_flops = 0;
  for (int64_t n : lengths) {
    const std::vector<int32_t> t = tokens_of(n);
    ASSIGN_OR_RETURN(auto state, engine.model->NewState(n));
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(
        engine.model->Prefill(t, state.get(), chunk, model::LogitsMode::kLast, nullptr));
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double flops = PrefillFlops(c, static_cast<double>(n));
    if (base_flops == 0 || n == 4096) {
      base_seconds = s;
      base_flops = flops;
    }
    nlohmann::ordered_json row;
    row["tokens"] = n;
    row["seconds"] = s;
    row["tokens_per_s"] = n / s;
    row["gflops"] = flops / s / 1e9;
    row["fraction_of_sgemm_peak"] = flops / s / 1e9 / limits.sgemm_gflops;
    row["cost_vs_flop_prediction"] = s / (base_seconds * flops / base_flops);
    prefill.push_back(row);
    if (!flags.GetBool("json")) {
      std::printf(
          "prefill %7lld tokens: %8.3f s  %9.1f tok/s  %7.1f GFLOP/s = %.2f of sgemm peak"
          "  cost/prediction(from %s) %.2f\n",
          static_cast<long long>(n), s, n / s, flops / s / 1e9,
          flops / s / 1e9 / limits.sgemm_gflops, n == 4096 ? "self" : "4K",
          s / (base_seconds * flops / base_flops));
    }
  }
  out["prefill"] = prefill;

  nlohmann::ordered_json decode = nlohmann::ordered_json::array();
  for (int64_t batch : batches) {
    std::vector<std::unique_ptr<model::SequenceState>> states;
    std::vector<model::SequenceState*> ptrs;
    const std::vector<int32_t> prompt = tokens_of(context);
    for (int64_t b = 0; b < batch; ++b) {
      ASSIGN_OR_RETURN(auto st, engine.model->NewState(context + steps + 1));
      if (b == 0) {
        RETURN_IF_ERROR(
            engine.model->Prefill(prompt, st.get(), chunk, model::LogitsMode::kNone, nullptr));
      } else {
        RETURN_IF_ERROR(st->CopyFrom(*states[0], engine.backend.get()));
      }
      ptrs.push_back(st.get());
      states.push_back(std::move(st));
    }
    std::vector<int32_t> next(batch, 1), sampled(batch);
    std::vector<kernels::SamplingParams> params(batch, kernels::SamplingParams{.temperature = 0});
    RETURN_IF_ERROR(engine.model->DecodeStep(ptrs, next, params.data(), sampled.data(), nullptr));
    std::vector<double> times;
    for (int64_t s = 0; s < steps; ++s) {
      const auto t0 = Clock::now();
      RETURN_IF_ERROR(
          engine.model->DecodeStep(ptrs, sampled, params.data(), sampled.data(), nullptr));
      times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double bytes = DecodeBytes(c, batch, context);
    const double roofline = bytes / (limits.read_bandwidth_gbs * 1e9);
    nlohmann::ordered_json row;
    row["batch"] = batch;
    row["context"] = context;
    row["step_seconds_median"] = median;
    row["bytes_per_step"] = bytes;
    row["roofline_seconds"] = roofline;
    row["fraction_of_bandwidth_roofline"] = roofline / median;
    row["tokens_per_s"] = batch / median;
    decode.push_back(row);
    if (!flags.GetBool("json")) {
      std::printf(
          "decode batch %3lld ctx %lld: step %8.2f ms  %8.1f tok/s  reads %.1f MB"
          "  roofline %.2f ms = %.2f of bandwidth roofline\n",
          static_cast<long long>(batch), static_cast<long long>(context), median * 1e3,
          batch / median, bytes / 1e6, roofline * 1e3, roofline / median);
    }
  }
  out["decode"] = decode;
  if (flags.GetBool("json")) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("limits (%d threads): read bandwidth %.1f GB/s, sgemm %.1f GFLOP/s\n", threads,
                limits.read_bandwidth_gbs, limits.sgemm_gflops);
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchEngine(const std::vector<std::string>& args) { return Report(BenchEngine(args)); }

}  // namespace ringserve::cli
