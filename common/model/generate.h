#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "kernels/backend.h"

namespace ringserve::model {

struct GenerateOptions {
  int64_t max_tokens = 16;
  kernels::SamplingParams sampling;  // position is set per draw
  int64_t chunk_tokens = 2048;
  std::vector<int32_t> stop_token_ids;  // besides the model's eos ids
  bool ignore_eos = false;
};

struct GenerateStats {
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// True when `token` ends generation under `options` (eos unless ignored, or a stop id).
bool IsStopToken(const ModelConfig& config, const GenerateOptions& options, int32_t token);

// Single-sequence generation: prefill, sample the first token at position len(prompt), then
// decode steps, the draw of position p being a function of (seed, p) alone. The reference the
// disaggregated cluster must reproduce token for token. The stop token, when hit, is included.
absl::StatusOr<std::vector<int32_t>> Generate(HybridModel* model, std::span<const int32_t> prompt,
                                              const GenerateOptions& options, GenerateStats* stats);

}  // namespace ringserve::model
