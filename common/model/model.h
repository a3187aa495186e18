#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/safetensors.h"
#include "common/model/config.h"
#include "common/model/sequence_state.h"
#include "common/model/weights.h"
#include "kernels/backend.h"

namespace ringserve::model {

struct ModelOptions {
  DecayVariant decay_variant = DecayVariant::kSglang;
};

// Which logits a forward pass returns.
enum class LogitsMode { kNone, kLast, kAll };

// The Ring-linear-2.0 hybrid model (model-spec sections 3 and 4) on a Backend. Owns the
// checkpoint mapping and the weights; sequences' states are owned by callers. Not thread-safe:
// one thread (a worker's scheduler, or the CLI) drives it.
class HybridModel {
 public:
  // Loads DIR (config.json, generation_config.json, safetensors) onto `backend`, which must
  // outlive the model.
  static absl::StatusOr<std::unique_ptr<HybridModel>> Load(const std::string& dir,
                                                           kernels::Backend* backend,
                                                           const ModelOptions& options);

  const ModelConfig& config() const { return config_; }
  kernels::Backend* backend() const { return backend_; }
  const ModelWeights& weights() const { return *weights_; }

  // A fresh state with room for `capacity` tokens.
  absl::StatusOr<std::unique_ptr<SequenceState>> NewState(int64_t capacity) const;

  // Feeds `tokens` to the sequence from state->position(), in chunks of at most `chunk_tokens`,
  // and advances the position. `logits` (host, may be null) receives [1, V] for the last token
  // (kLast) or [tokens, V] (kAll).
  absl::Status Prefill(std::span<const int32_t> tokens, SequenceState* state, int64_t chunk_tokens,
                       LogitsMode mode, std::vector<float>* logits);

  // Advances each sequence by its one token. When `params` is set, samples one token per
  // sequence into `sampled`; when `logits` is set, copies [B, V] logits to it.
  absl::Status DecodeStep(std::span<SequenceState* const> states, std::span<const int32_t> tokens,
                          const kernels::SamplingParams* params, int32_t* sampled,
                          std::vector<float>* logits);

  // Samples from the logits of the last Prefill (kLast) without copying them to the host.
  absl::StatusOr<int32_t> SampleLast(const kernels::SamplingParams& params);

 private:
  HybridModel() = default;

  // One sequence's rows in a forward pass.
  struct Segment {
    SequenceState* state;
    std::span<const int32_t> tokens;
  };
  // Runs the rows of all segments through the layers; leaves final logits of the requested rows
  // in logits_buf_ ([rows_out, V]).
  absl::Status Forward(const std::vector<Segment>& segments, LogitsMode mode, int64_t* rows_out);
  absl::Status EnsureWorkspace(int64_t rows);
  float* Alloc(size_t floats);

  ModelConfig config_;
  kernels::Backend* backend_ = nullptr;
  std::unique_ptr<base::TensorStore> store_;
  std::unique_ptr<ModelWeights> weights_;
  // Workspace, grown on demand: activations of the largest pass so far.
  int64_t workspace_rows_ = 0;
  kernels::Buffer workspace_{nullptr, nullptr};
  size_t workspace_floats_ = 0;
  size_t workspace_used_ = 0;
  kernels::Buffer logits_buf_{nullptr, nullptr};
  size_t logits_floats_ = 0;
};

}  // namespace ringserve::model
