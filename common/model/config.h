#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringserve::model {

// Which per-layer decay factor formula (model-spec 3.3.1, 7.1) the linear layers use.
enum class DecayVariant { kSglang, kHf };
absl::StatusOr<DecayVariant> ParseDecayVariant(const std::string& name);
const char* DecayVariantName(DecayVariant v);

// config.json of a Ring-linear-2.0 checkpoint (model_type bailing_moe_linear), with the spec's
// defaults for absent keys and the derived layer layout. Immutable value type.
struct ModelConfig {
  std::string model_type = "bailing_moe_linear";
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t layer_group_size = 1;
  int64_t group_norm_size = 1;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int64_t moe_shared_expert_intermediate_size = 0;
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t num_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  int64_t first_k_dense_replace = 0;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  bool use_qk_norm = true;
  bool use_qkv_bias = false;
  bool use_bias = false;
  int64_t num_nextn_predict_layers = 0;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype = "bfloat16";

  // Parses and validates config.json text.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& text);
  // Reads DIR/config.json (and eos ids from DIR/generation_config.json when present).
  static absl::StatusOr<ModelConfig> FromDirectory(const std::string& dir);
  // config.json text of this config.
  std::string ToJson() const;

  bool IsSoftmaxLayer(int64_t layer) const;
  bool IsMoeLayer(int64_t layer) const { return layer >= first_k_dense_replace; }
  int64_t rotary_dim() const;
  int64_t num_softmax_layers() const;
  int64_t num_linear_layers() const { return num_hidden_layers - num_softmax_layers(); }
  int64_t linear_qkv_rows() const { return 3 * num_attention_heads * head_dim; }
  int64_t softmax_qkv_rows() const {
    return (num_attention_heads + 2 * num_key_value_heads) * head_dim;
  }
  int64_t shared_intermediate() const { return moe_intermediate_size * num_shared_experts; }
  // g_{layer,h} = -base_h * f(layer) for every head (fp32 as upstream).
  std::vector<float> LogDecay(int64_t layer, DecayVariant variant) const;
};

}  // namespace ringserve::model
