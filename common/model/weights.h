#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/safetensors.h"
#include "common/model/config.h"
#include "kernels/backend.h"

namespace ringserve::model {

// Weights of one decoder layer in backend memory. Fused where one input feeds several
// projections: linear layers' `in_proj` is [q; k; v; g_proj] ([4*H*D, Hd]), softmax layers'
// is the checkpoint's query_key_value; every SwiGLU's `gate_up` is [gate; up] ([2I, Hd]).
struct LayerWeights {
  bool softmax = false;
  bool moe = false;
  const float* input_norm = nullptr;  // [Hd]
  const float* post_norm = nullptr;   // [Hd]
  kernels::Weight in_proj;
  const float* q_norm = nullptr;                // [H*D]: the [D] query_layernorm tiled over heads
  const float* k_norm = nullptr;                // [H*D]: the [D] key_layernorm tiled over heads
  const float* g_norm = nullptr;                // [H*D] (linear layers)
  const float* log_decay = nullptr;             // [H] (linear layers), backend memory
  kernels::Weight dense;                        // [Hd, H*D]
  kernels::Weight mlp_gate_up;                  // dense MLP [2I, Hd]
  kernels::Weight mlp_down;                     // [Hd, I]
  kernels::Weight router;                       // [E, Hd]
  const float* expert_bias = nullptr;           // [E]
  std::vector<kernels::Weight> expert_gate_up;  // E x [2Im, Hd]
  std::vector<kernels::Weight> expert_down;     // E x [Hd, Im]
  kernels::Weight shared_gate_up;
  kernels::Weight shared_down;
};

// All weights of the model, uploaded to a backend (which owns the memory, or, on the CPU, points
// into the store's mapped files: the store must outlive the weights). Immutable after Load;
// thread-safe to read.
struct ModelWeights {
  kernels::Weight embedding;  // [V, Hd]
  std::vector<LayerWeights> layers;
  const float* final_norm = nullptr;
  kernels::Weight lm_head;  // [V, Hd]
  size_t checkpoint_bytes = 0;
  std::vector<kernels::Buffer> decay_buffers;  // owns the layers' log_decay

  // Checks every tensor of model-spec section 2 (name, shape, dtype; MTP layers too), reporting
  // the first mismatch by name, then uploads the ones the forward pass uses.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const ModelConfig& config,
                                                            const base::TensorStore& store,
                                                            kernels::Backend* backend,
                                                            DecayVariant variant);
};

// The checkpoint tensors of model-spec section 2 for `config`: name and shape, in spec order.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool fp32 = false;  // expert_bias: F32 in the checkpoints
};
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

}  // namespace ringserve::model
