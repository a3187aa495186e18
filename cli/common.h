#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/flags.h"
#include "common/model/config.h"
#include "common/model/model.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"

// Pieces shared by the ringctl commands.
namespace ringserve::cli {

// Prints a failed status to stderr; returns the exit code (0, 1 or 2 for bad usage).
int Report(const absl::Status& status);

// Minimum, median and maximum of repeated measurements (of a time or of a ratio).
struct Spread {
  double min = 0;
  double median = 0;
  double max = 0;
};
// The spread of `values` (all zero when empty).
Spread SpreadOf(std::vector<double> values);
// {"min": .., "median": .., "max": ..}.
nlohmann::ordered_json SpreadJson(const Spread& s);

// --model, --device, --threads, --decay-variant, --chunk-tokens.
void AddEngineFlags(base::FlagSet* flags);
// --temperature, --top-k, --top-p, --min-p, --seed.
void AddSamplingFlags(base::FlagSet* flags);

absl::StatusOr<kernels::SamplingParams> ParseSampling(const base::FlagSet& flags);

// A backend and a model loaded on it (the backend outlives the model).
struct Engine {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::HybridModel> model;
};
absl::StatusOr<Engine> LoadEngine(const base::FlagSet& flags);

// Writes the default checkpoint for `config` with its tokenizer files to `dir`.
absl::Status WriteDefaultModel(model::ModelConfig config, const std::string& dir, uint64_t seed,
                               int shards);

// Offline generation with a throughput line on `log`.
absl::StatusOr<std::vector<int32_t>> GenerateTokens(model::HybridModel* model,
                                                    const std::vector<int32_t>& prompt,
                                                    int64_t max_tokens,
                                                    const kernels::SamplingParams& sampling,
                                                    int64_t chunk_tokens, bool ignore_eos,
                                                    std::ostream* log);

// ringctl generate --router ...: the streaming client.
int RunGenerateRemote(const std::vector<std::string>& args);

}  // namespace ringserve::cli
