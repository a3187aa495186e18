#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
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
  // Decode steps of up to this many sequences replay a Graph captured for their batch size (a
  // CUDA graph on the GPU; the backend may lower the bound); 0 runs every step eagerly.
  int64_t max_graph_batch = 64;
};

// Which logits a forward pass returns.
enum class LogitsMode { kNone, kLast, kAll };

// The Ring-linear-2.0 hybrid model (model-spec sections 3 and 4) on a Backend. Owns the
// checkpoint mapping, the weights, its device workspaces and its captured decode graphs;
// sequences' states are owned by callers. Not thread-safe: one thread (a worker's scheduler, or
// the CLI) drives it.
//
// Decode graphs: a decode step of B sequences reads everything that changes between steps (token
// ids, positions, each layer's state and KV cache pointers, cache lengths) from one input block
// in device memory, so its calls are the same every step of batch size B. The first step of a
// batch size runs eagerly, then its calls are captured into a Graph; later steps of that size
// upload the input block and replay the graph. Sampling runs after the graph.
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

  // Prefix checkpoints. A checkpoint at position p is every linear layer's fp32 state after p
  // tokens, copied from the state the prefill carries between chunks, plus the KV of tokens
  // [0, p), saved in ranges. Restoring one and prefilling the rest of a prompt in the chunks a
  // cold run would use from p gives the cold run's results bit for bit.

  // KV of prompt tokens [begin, end) as SaveKv wrote it.
  struct SavedKv {
    const void* data;
    int64_t begin;
    int64_t end;
  };
  // Bytes of one SaveLinearStates, and of SaveKv per token.
  size_t checkpoint_bytes() const;
  size_t kv_bytes_per_token() const;
  // Copies every linear layer's state of `state` into new backend memory:
  // [linear layers, H, D, D], fp32.
  absl::StatusOr<kernels::Buffer> SaveLinearStates(const SequenceState& state);
  // Copies the K and V of tokens [begin, end) (within the state's position) into new backend
  // memory: [softmax layers, 2 (K, V), Hkv, end - begin, D], bf16.
  absl::StatusOr<kernels::Buffer> SaveKv(const SequenceState& state, int64_t begin, int64_t end);
  // Sets `state` to position `tokens`: linear states from `linear_states` (SaveLinearStates at
  // that position) and KV from `kv`, which covers [0, tokens) in order.
  absl::Status Restore(const void* linear_states, std::span<const SavedKv> kv, int64_t tokens,
                       SequenceState* state);

  // Decode steps up to this batch size replay graphs (0: none).
  int64_t max_graph_batch() const { return max_graph_batch_; }
  // Sets that bound (clamped like ModelOptions::max_graph_batch) and drops the captured graphs.
  void set_max_graph_batch(int64_t batch);
  // Number of graphs held (one per batch size).
  int64_t graphs_captured() const { return static_cast<int64_t>(graphs_.size()); }
  // Decode steps that replayed a graph, since Load.
  int64_t graph_replays() const { return graph_replays_; }

 private:
  HybridModel() = default;

  // Device memory of forward passes: activations, the pass's inputs and its logits.
  struct PassMemory {
    kernels::Buffer activations{nullptr, nullptr};
    size_t activation_floats = 0;
    size_t used = 0;  // floats handed out by Take in the current pass
    kernels::Buffer inputs{nullptr, nullptr};
    size_t input_bytes = 0;
    kernels::Buffer logits{nullptr, nullptr};
    size_t logits_floats = 0;
  };
  // Byte offsets in a decode step's input block of B sequences.
  struct DecodeInputs {
    size_t ids = 0;        // int32 [B]
    size_t positions = 0;  // int32 [B]
    size_t states = 0;     // float* [linear layers][B]
    size_t caches = 0;     // KvCacheRef [softmax layers][B]
    size_t bytes = 0;
  };
  // Runs one layer's attention on q/k/v rows at stride ld into o.
  using AttentionFn =
      std::function<void(const LayerWeights& w, int64_t linear_index, int64_t softmax_index,
                         const float* q, const float* k, const float* v, int64_t ld, float* o)>;

  // Grows `mem` to hold a pass of `rows` rows, `input_bytes` of inputs and `logit_rows` rows of
  // logits, and starts a new pass.
  absl::Status Reserve(PassMemory* mem, int64_t rows, size_t input_bytes, int64_t logit_rows);
  float* Take(PassMemory* mem, size_t floats);
  DecodeInputs DecodeLayout(int64_t batch) const;
  // Embeds `rows` tokens (ids and positions in mem->inputs at the given offsets), runs them
  // through every layer and writes logits of the last `logit_rows` rows to mem->logits. Only
  // issues recordable backend calls (no allocation, no host copies).
  void Forward(PassMemory* mem, int64_t rows, size_t ids_offset, size_t positions_offset,
               const AttentionFn& attention, int64_t logit_rows);
  // Forward of a decode step of `batch` sequences whose inputs are in mem->inputs.
  void DecodeForward(PassMemory* mem, int64_t batch);
  // Records DecodeForward of `batch` sequences into graphs_ (after an eager step of that size).
  void CaptureDecode(int64_t batch);

  ModelConfig config_;
  kernels::Backend* backend_ = nullptr;
  std::unique_ptr<base::TensorStore> store_;
  std::unique_ptr<ModelWeights> weights_;
  int64_t max_graph_batch_ = 0;
  // Prefill and eager decode steps larger than max_graph_batch_; grows on demand.
  PassMemory pass_;
  // Graph-eligible decode steps: sized once for max_graph_batch_, never moved, since the
  // graphs point into it.
  PassMemory graph_pass_;
  std::map<int64_t, std::unique_ptr<kernels::Graph>> graphs_;  // by batch size
  std::set<int64_t> capture_failed_;                           // batch sizes left eager
  int64_t graph_replays_ = 0;
};

}  // namespace ringserve::model
