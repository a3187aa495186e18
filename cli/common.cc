#include "cli/common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/generate.h"
#include "common/model/make_model.h"
#include "common/text/bpe_trainer.h"
#include "common/text/tokenizer.h"

namespace ringserve::cli {

int Report(const absl::Status& status) {
  if (status.ok()) return 0;
  if (base::IsHelp(status)) {
    std::fputs(std::string(status.message()).c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

Spread SpreadOf(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  return {values.front(), values[values.size() / 2], values.back()};
}

nlohmann::ordered_json SpreadJson(const Spread& s) {
  return {{"min", s.min}, {"median", s.median}, {"max", s.max}};
}

void AddEngineFlags(base::FlagSet* flags) {
  flags->String("model", "", "checkpoint directory");
  flags->String("device", "cpu", "cpu or cuda");
  flags->String("threads", "0", "CPU threads (0 = all cores)");
  flags->String("decay-variant", "sglang", "linear-attention decay formula: sglang or hf");
  flags->String("chunk-tokens", "2048", "prefill chunk length");
  flags->Bool("enforce-eager", false,
              "run every decode step eagerly instead of replaying captured graphs");
}

void AddSamplingFlags(base::FlagSet* flags) {
  flags->String("temperature", "1", "0 = greedy");
  flags->String("top-k", "0", "0 = off");
  flags->String("top-p", "1", "nucleus mass in (0, 1]");
  flags->String("min-p", "0", "in [0, 1]");
  flags->String("seed", "0", "sampling seed");
}

absl::StatusOr<kernels::SamplingParams> ParseSampling(const base::FlagSet& flags) {
  kernels::SamplingParams p;
  ASSIGN_OR_RETURN(const double temperature, flags.GetDouble("temperature"));
  ASSIGN_OR_RETURN(const int64_t top_k, flags.GetInt("top-k"));
  ASSIGN_OR_RETURN(const double top_p, flags.GetDouble("top-p"));
  ASSIGN_OR_RETURN(const double min_p, flags.GetDouble("min-p"));
  ASSIGN_OR_RETURN(const int64_t seed, flags.GetInt("seed"));
  if (!(temperature >= 0 && temperature <= 100)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature ", temperature, " is outside [0, 100]"));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top-k ", top_k, " is negative"));
  if (!(top_p > 0 && top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top-p ", top_p, " is outside (0, 1]"));
  }
  if (!(min_p >= 0 && min_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("min-p ", min_p, " is outside [0, 1]"));
  }
  p.temperature = static_cast<float>(temperature);
  p.top_k = static_cast<int32_t>(top_k);
  p.top_p = static_cast<float>(top_p);
  p.min_p = static_cast<float>(min_p);
  p.seed = static_cast<uint64_t>(seed);
  return p;
}

absl::StatusOr<Engine> LoadEngine(const base::FlagSet& flags) {
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(const int64_t threads, flags.GetInt("threads"));
  ASSIGN_OR_RETURN(model::DecayVariant variant,
                   model::ParseDecayVariant(flags.Get("decay-variant")));
  model::ModelOptions options{.decay_variant = variant};
  if (flags.GetBool("enforce-eager")) options.max_graph_batch = 0;
  Engine engine;
  ASSIGN_OR_RETURN(engine.backend,
                   kernels::CreateBackend(flags.Get("device"), static_cast<int>(threads)));
  ASSIGN_OR_RETURN(engine.model,
                   model::HybridModel::Load(flags.Get("model"), engine.backend.get(), options));
  return engine;
}

absl::Status WriteDefaultModel(model::ModelConfig config, const std::string& dir, uint64_t seed,
                               int shards) {
  RETURN_IF_ERROR(text::WriteTokenizerFiles(dir, static_cast<int>(config.vocab_size)));
  ASSIGN_OR_RETURN(auto tokenizer, text::Tokenizer::FromDirectory(dir));
  config.eos_token_ids.clear();
  for (const char* name : {"<|endoftext|>", "<|role_end|>"}) {
    const auto id = tokenizer->TokenToId(name);
    if (!id.has_value()) {
      return absl::InternalError(absl::StrCat("the generated tokenizer lacks ", name));
    }
    config.eos_token_ids.push_back(*id);
  }
  return model::WriteRandomCheckpoint(config, dir, {seed, shards});
}

absl::StatusOr<std::vector<int32_t>> GenerateTokens(model::HybridModel* model,
                                                    const std::vector<int32_t>& prompt,
                                                    int64_t max_tokens,
                                                    const kernels::SamplingParams& sampling,
                                                    int64_t chunk_tokens, bool ignore_eos,
                                                    std::ostream* log) {
  model::GenerateOptions options;
  options.max_tokens = max_tokens;
  options.sampling = sampling;
  options.chunk_tokens = chunk_tokens;
  options.ignore_eos = ignore_eos;
  model::GenerateStats stats;
  ASSIGN_OR_RETURN(std::vector<int32_t> out, model::Generate(model, prompt, options, &stats));
  *log << "prompt_tokens=" << prompt.size()
       << " prefill_tokens_per_s=" << prompt.size() / std::max(1e-9, stats.prefill_seconds)
       << " generated_tokens=" << out.size() << " decode_tokens_per_s="
       << (out.size() > 1 ? (out.size() - 1) / std::max(1e-9, stats.decode_seconds) : 0.0) << "\n";
  return out;
}

}  // namespace ringserve::cli
