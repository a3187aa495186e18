// ringctl bench-engine: model load time, then prefill and decode speed of the engine beside
// limits measured in the same run (memory read bandwidth, sgemm peak at the same thread count):
// prefill cost against the FLOP count, decode step time against the bytes a step reads (weights
// in the dtype the backend holds them) across context lengths, each measurement repeated.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "common/base/bf16.h"
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

// Bytes one decode step must read at batch `batch` and context `context`: the weights in the
// dtype the backend holds them (bf16 as stored on the CPU; experts counted once per distinct
// expert, at most all of them), the linear states (read and written), the bf16 KV cache and the
// lm_head.
double DecodeBytes(const model::ModelConfig& c, const model::ModelWeights& w, int64_t batch,
                   int64_t context) {
  const double experts =
      std::min<double>(c.num_experts, static_cast<double>(batch * c.num_experts_per_tok));
  double weights = static_cast<double>(w.lm_head.bytes());
  for (const model::LayerWeights& l : w.layers) {
    weights += static_cast<double>(l.in_proj.bytes() + l.dense.bytes());
    if (l.moe) {
      weights +=
          static_cast<double>(l.router.bytes() + l.shared_gate_up.bytes() + l.shared_down.bytes()) +
          experts * static_cast<double>(l.expert_gate_up[0].bytes() + l.expert_down[0].bytes());
    } else {
      weights += static_cast<double>(l.mlp_gate_up.bytes() + l.mlp_down.bytes());
    }
  }
  const double state =
      2.0 * 4 * c.num_linear_layers() * c.num_attention_heads * c.head_dim * c.head_dim;
  const double kv = 2.0 * 2 * c.num_softmax_layers() * c.num_key_value_heads * c.head_dim *
                    static_cast<double>(context);
  return weights + batch * (state + kv);
}

// Fills the first `context` positions of `state` with synthetic values (the cost of a decode
// step does not depend on them) and sets its position, instead of a prefill of that length.
void FillSynthetic(model::SequenceState* state, int64_t context, kernels::Backend* backend) {
  std::vector<uint16_t> kv;
  std::vector<float> linear(state->linear_state_bytes() / sizeof(float));
  for (size_t i = 0; i < linear.size(); ++i) linear[i] = 1e-3f * static_cast<float>(i % 17);
  for (int64_t l = 0; l < state->num_linear(); ++l) {
    backend->CopyToDevice(state->linear_state(l), linear.data(), state->linear_state_bytes());
  }
  for (int64_t l = 0; l < state->num_softmax(); ++l) {
    for (bool value : {false, true}) {
      for (const model::Span& span : state->KvSpans(l, value, 0, context)) {
        if (kv.size() * sizeof(uint16_t) < span.bytes) {
          kv.resize(span.bytes / sizeof(uint16_t));
          for (size_t i = 0; i < kv.size(); ++i) {
            kv[i] = base::FloatToBf16(static_cast<float>(i % 255) / 127.0f - 1.0f);
          }
        }
        backend->CopyToDevice(span.data, kv.data(), span.bytes);
      }
    }
  }
  state->set_position(context);
}

// `values` with 4096 (the base the predictions scale from) moved to the front when present; else
// the first value is the base.
std::vector<int64_t> BaseFirst(std::vector<int64_t> values) {
  std::stable_partition(values.begin(), values.end(), [](int64_t v) { return v == 4096; });
  return values;
}

absl::Status BenchEngine(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl bench-engine");
  AddEngineFlags(&flags);
  flags.String("lengths", "1024,4096,16384", "prompt lengths to prefill (empty = none)");
  flags.String("decode-context", "4096", "context lengths of the decode measurements");
  flags.String("decode-steps", "16", "decode steps timed per batch size and repetition");
  flags.String("batches", "1,16", "decode batch sizes (empty = no decode)");
  flags.Bool("synthetic-context", false,
             "fill the decode context with synthetic values instead of prefilling it");
  flags.String("max-state-gib", "12",
               "skip decode measurements whose sequence states need more than this");
  flags.String("repeat", "3", "runs of each measurement (min/median/max are reported)");
  flags.Bool("json", false, "print one JSON object");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths, flags.GetIntList("lengths"));
  ASSIGN_OR_RETURN(const std::vector<int64_t> batches, flags.GetIntList("batches"));
  ASSIGN_OR_RETURN(std::vector<int64_t> contexts, flags.GetIntList("decode-context"));
  lengths = BaseFirst(std::move(lengths));
  contexts = BaseFirst(std::move(contexts));
  ASSIGN_OR_RETURN(const int64_t steps, flags.GetInt("decode-steps"));
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk-tokens"));
  ASSIGN_OR_RETURN(const int64_t threads_flag, flags.GetInt("threads"));
  ASSIGN_OR_RETURN(const int64_t repeat, flags.GetInt("repeat"));
  ASSIGN_OR_RETURN(const double max_state_gib, flags.GetDouble("max-state-gib"));
  const bool synthetic = flags.GetBool("synthetic-context");
  const bool json = flags.GetBool("json");
  FILE* progress = json ? stderr : stdout;
  if (repeat < 1 || steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--repeat ", repeat, " and --decode-steps ", steps, " must be at least 1"));
  }
  const auto load_start = Clock::now();
  ASSIGN_OR_RETURN(Engine engine, LoadEngine(flags));
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  const model::ModelConfig& c = engine.model->config();
  const int threads = threads_flag > 0 ? static_cast<int>(threads_flag)
                                       : static_cast<int>(std::thread::hardware_concurrency());
  const kernels::MachineLimits limits = kernels::ProbeMachine(threads);
  nlohmann::ordered_json out;
  out["threads"] = threads;
  out["repeat"] = repeat;
  out["read_bandwidth_gbs"] = limits.read_bandwidth_gbs;
  out["sgemm_gflops"] = limits.sgemm_gflops;
  out["load_seconds"] = load_seconds;
  out["checkpoint_bytes"] = engine.model->weights().checkpoint_bytes;
  out["active_gemm_params"] = ActiveGemmParams(c);
  out["softmax_layers"] = c.num_softmax_layers();
  out["linear_layers"] = c.num_linear_layers();
  out["synthetic_context"] = synthetic;
  std::fprintf(progress,
               "load %.3f s (%.1f MB of weights); limits (%d threads): read bandwidth %.1f GB/s,"
               " sgemm %.1f GFLOP/s; %lld runs each (min/median/max)\n",
               load_seconds, engine.model->weights().checkpoint_bytes / 1e6, threads,
               limits.read_bandwidth_gbs, limits.sgemm_gflops, static_cast<long long>(repeat));

  auto tokens_of = [&](int64_t n) {
    std::vector<int32_t> t(n);
    for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);
    return t;
  };
  nlohmann::ordered_json prefill = nlohmann::ordered_json::array();
  // The prediction of each length's cost scales the run of the base length (measured first) by
  // the FLOP count, run by run. An untimed prefill first sets up the engine's workspace.
  std::vector<double> base_seconds;
  double base_flops = 0;
  if (!lengths.empty()) {
    const int64_t warm = std::min(chunk, *std::min_element(lengths.begin(), lengths.end()));
    ASSIGN_OR_RETURN(auto state, engine.model->NewState(warm));
    RETURN_IF_ERROR(engine.model->Prefill(tokens_of(warm), state.get(), chunk,
                                          model::LogitsMode::kLast, nullptr));
  }
  for (int64_t n : lengths) {
    const std::vector<int32_t> t = tokens_of(n);
    ASSIGN_OR_RETURN(auto state, engine.model->NewState(n));
    std::vector<double> runs;
    for (int64_t r = 0; r < repeat; ++r) {
      state->Reset(engine.backend.get());
      const auto t0 = Clock::now();
      RETURN_IF_ERROR(
          engine.model->Prefill(t, state.get(), chunk, model::LogitsMode::kLast, nullptr));
      runs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    const double flops = PrefillFlops(c, static_cast<double>(n));
    if (base_flops == 0) {
      base_seconds = runs;
      base_flops = flops;
    }
    std::vector<double> cost;
    for (int64_t r = 0; r < repeat; ++r) {
      cost.push_back(runs[r] / (base_seconds[r] * flops / base_flops));
    }
    const Spread s = SpreadOf(runs), ratio = SpreadOf(cost);
    nlohmann::ordered_json row;
    row["tokens"] = n;
    row["seconds"] = SpreadJson(s);
    row["runs_seconds"] = runs;
    row["tokens_per_s"] = n / s.median;
    row["gflops"] = flops / s.median / 1e9;
    row["fraction_of_sgemm_peak"] = flops / s.median / 1e9 / limits.sgemm_gflops;
    row["cost_vs_flop_prediction"] = SpreadJson(ratio);
    prefill.push_back(row);
    std::fprintf(
        progress,
        "prefill %7lld tokens: %.3f/%.3f/%.3f s  %9.1f tok/s  %7.1f GFLOP/s = %.2f of sgemm"
        " peak  cost/prediction(from %lld) %.2f/%.2f/%.2f\n",
        static_cast<long long>(n), s.min, s.median, s.max, n / s.median, flops / s.median / 1e9,
        flops / s.median / 1e9 / limits.sgemm_gflops, static_cast<long long>(lengths.front()),
        ratio.min, ratio.median, ratio.max);
    std::fflush(progress);
  }
  out["prefill"] = prefill;

  nlohmann::ordered_json decode = nlohmann::ordered_json::array();
  // Per batch size: the runs and byte count of the base context (measured first), which predict
  // the other contexts' step times by their byte counts.
  std::map<int64_t, std::pair<std::vector<double>, double>> base_of_batch;
  const int64_t extra = steps * repeat + 2;
  for (int64_t requested : contexts) {
    // A state holds at most max_position_embeddings tokens, the timed steps included.
    const int64_t context = std::min(requested, c.max_position_embeddings - extra);
    if (context < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--decode-context ", requested, " leaves no room for ", extra, " steps"));
    }
    for (int64_t batch : batches) {
      const double state_gib =
          static_cast<double>(batch) *
          (static_cast<double>(context + extra) * 2 * 2 * c.num_softmax_layers() *
               c.num_key_value_heads * c.head_dim +
           4.0 * c.num_linear_layers() * c.num_attention_heads * c.head_dim * c.head_dim) /
          (1 << 30);
      if (state_gib > max_state_gib) {
        std::fprintf(progress,
                     "decode batch %3lld ctx %lld: skipped, states need %.1f GiB > "
                     "--max-state-gib %.1f\n",
                     static_cast<long long>(batch), static_cast<long long>(context), state_gib,
                     max_state_gib);
        continue;
      }
      std::vector<std::unique_ptr<model::SequenceState>> states;
      std::vector<model::SequenceState*> ptrs;
      for (int64_t b = 0; b < batch; ++b) {
        ASSIGN_OR_RETURN(auto st, engine.model->NewState(context + extra));
        if (b > 0) {
          RETURN_IF_ERROR(st->CopyFrom(*states[0], engine.backend.get()));
        } else if (synthetic) {
          FillSynthetic(st.get(), context, engine.backend.get());
        } else {
          RETURN_IF_ERROR(engine.model->Prefill(tokens_of(context), st.get(), chunk,
                                                model::LogitsMode::kNone, nullptr));
        }
        ptrs.push_back(st.get());
        states.push_back(std::move(st));
      }
      std::vector<int32_t> next(batch, 1), sampled(batch);
      std::vector<kernels::SamplingParams> params(batch, kernels::SamplingParams{.temperature = 0});
      RETURN_IF_ERROR(engine.model->DecodeStep(ptrs, next, params.data(), sampled.data(), nullptr));
      std::vector<double> runs;
      for (int64_t r = 0; r < repeat; ++r) {
        std::vector<double> times;
        for (int64_t s = 0; s < steps; ++s) {
          const auto t0 = Clock::now();
          RETURN_IF_ERROR(
              engine.model->DecodeStep(ptrs, sampled, params.data(), sampled.data(), nullptr));
          times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        }
        runs.push_back(SpreadOf(times).median);
      }
      const double bytes = DecodeBytes(c, engine.model->weights(), batch, context);
      auto base = base_of_batch.find(batch);
      if (base == base_of_batch.end())
        base = base_of_batch.emplace(batch, std::pair(runs, bytes)).first;
      std::vector<double> cost;
      for (int64_t r = 0; r < repeat; ++r) {
        cost.push_back(runs[r] / (base->second.first[r] * bytes / base->second.second));
      }
      const Spread s = SpreadOf(runs), ratio = SpreadOf(cost);
      const double roofline = bytes / (limits.read_bandwidth_gbs * 1e9);
      nlohmann::ordered_json row;
      row["batch"] = batch;
      row["context"] = context;
      row["step_seconds"] = SpreadJson(s);
      row["runs_step_seconds"] = runs;
      row["bytes_per_step"] = bytes;
      row["roofline_seconds"] = roofline;
      row["fraction_of_bandwidth_roofline"] = roofline / s.median;
      row["tokens_per_s"] = batch / s.median;
      row["cost_vs_byte_prediction"] = SpreadJson(ratio);
      decode.push_back(row);
      std::fprintf(
          progress,
          "decode batch %3lld ctx %6lld: step %.2f/%.2f/%.2f ms  %8.1f tok/s  reads %.1f MB"
          "  roofline %.2f ms = %.2f of bandwidth roofline  cost/prediction %.2f/%.2f/%.2f\n",
          static_cast<long long>(batch), static_cast<long long>(context), s.min * 1e3,
          s.median * 1e3, s.max * 1e3, batch / s.median, bytes / 1e6, roofline * 1e3,
          roofline / s.median, ratio.min, ratio.median, ratio.max);
      std::fflush(progress);
    }
  }
  out["decode"] = decode;
  if (synthetic && !decode.empty()) {
    std::fprintf(progress,
                 "decode contexts hold synthetic values (no prefill); a step's cost does not "
                 "depend on them\n");
  }
  if (json) std::printf("%s\n", out.dump().c_str());
  return absl::OkStatus();
}

}  // namespace

int RunBenchEngine(const std::vector<std::string>& args) { return Report(BenchEngine(args)); }

}  // namespace ringserve::cli
