#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/config.h"

namespace ringserve::model {

// The config of a named preset: "tiny" (tests: hidden 128, 8 layers LLLF LLLF, 16 experts top-4
// in 4 groups) or "small" (benchmarks: about 330 MB of active BF16 weights per token);
// "tiny-softmax" and "small-softmax" are the same shapes with every layer softmax attention, the
// all-softmax baselines the hybrid is measured against.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& preset);

struct CheckpointOptions {
  uint64_t seed = 0;
  int shards = 1;  // > 1 writes model-XXXXX-of-YYYYY.safetensors and an index
};

// Writes a real-format Ring-linear checkpoint with deterministic random weights to `dir`:
// config.json, generation_config.json and safetensors (BF16, expert_bias F32), with every tensor
// of model-spec section 2 (MTP layers included when the config has them).
absl::Status WriteRandomCheckpoint(const ModelConfig& config, const std::string& dir,
                                   const CheckpointOptions& options);

}  // namespace ringserve::model
