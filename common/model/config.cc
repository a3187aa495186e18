#include "common/model/config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace ringserve::model {
namespace {

using Json = nlohmann::json;

absl::Status ReadInt(const Json& j, const char* key, int64_t* out, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("config.json lacks '", key, "'"));
    return absl::OkStatus();
  }
  if (!j[key].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is not an integer"));
  }
  *out = j[key].get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const char* key, double* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is not a number"));
  }
  *out = j[key].get<double>();
  if (!std::isfinite(*out)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is not finite"));
  }
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& j, const char* key, bool* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is not a boolean"));
  }
  *out = j[key].get<bool>();
  return absl::OkStatus();
}

absl::Status ReadEos(const Json& j, std::vector<int64_t>* out) {
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return absl::OkStatus();
  const Json& v = j["eos_token_id"];
  out->clear();
  if (v.is_number_integer()) {
    out->push_back(v.get<int64_t>());
    return absl::OkStatus();
  }
  if (!v.is_array()) return absl::InvalidArgumentError("eos_token_id is not an id or a list");
  for (const auto& e : v) {
    if (!e.is_number_integer()) return absl::InvalidArgumentError("eos_token_id holds a non-id");
    out->push_back(e.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status Positive(int64_t v, const char* key) {
  if (v <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json '", key, "' is ", v, "; it must be positive"));
  }
  return absl::OkStatus();
}

absl::Status InRange(int64_t v, const char* key, int64_t low, int64_t high) {
  if (v < low || v > high) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is ", v,
                                                   "; it must lie in [", low, ", ", high, "]"));
  }
  return absl::OkStatus();
}

// ALiBi / Lightning-Attention base slopes for `heads` heads.
std::vector<double> BaseSlopes(int64_t heads) {
  auto power_of_two = [](int64_t n) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3)));
    std::vector<double> s(n);
    for (int64_t i = 0; i < n; ++i) s[i] = std::pow(start, static_cast<double>(i + 1));
    return s;
  };
  const double lg = std::log2(static_cast<double>(heads));
  if (std::floor(lg) == lg) return power_of_two(heads);
  const int64_t p = int64_t{1} << static_cast<int64_t>(std::floor(lg));
  std::vector<double> s = power_of_two(p);
  const std::vector<double> extra = power_of_two(2 * p);
  for (int64_t i = 0; static_cast<int64_t>(s.size()) < heads; i += 2) s.push_back(extra[i]);
  return s;
}

}  // namespace

absl::StatusOr<DecayVariant> ParseDecayVariant(const std::string& name) {
  if (name == "sglang") return DecayVariant::kSglang;
  if (name == "hf") return DecayVariant::kHf;
  return absl::InvalidArgumentError(
      absl::StrCat("decay variant '", name, "' is not one of sglang, hf"));
}

const char* DecayVariantName(DecayVariant v) { return v == DecayVariant::kHf ? "hf" : "sglang"; }

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a valid JSON object");
  }
  ModelConfig c;
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string())
      return absl::InvalidArgumentError("model_type is not a string");
    c.model_type = j["model_type"].get<std::string>();
  }
  if (c.model_type != "bailing_moe_linear") {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json model_type '", c.model_type, "' is not bailing_moe_linear"));
  }
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c.hidden_size, true));
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c.num_hidden_layers, true));
  RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", &c.num_attention_heads, true));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", &c.num_key_value_heads, false));
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  RETURN_IF_ERROR(ReadInt(j, "head_dim", &c.head_dim, false));
  RETURN_IF_ERROR(ReadInt(j, "layer_group_size", &c.layer_group_size, false));
  RETURN_IF_ERROR(ReadInt(j, "group_norm_size", &c.group_norm_size, false));
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c.intermediate_size, true));
  RETURN_IF_ERROR(ReadInt(j, "moe_intermediate_size", &c.moe_intermediate_size, true));
  c.moe_shared_expert_intermediate_size = c.moe_intermediate_size;
  RETURN_IF_ERROR(ReadInt(j, "moe_shared_expert_intermediate_size",
                          &c.moe_shared_expert_intermediate_size, false));
  RETURN_IF_ERROR(ReadInt(j, "num_experts", &c.num_experts, true));
  RETURN_IF_ERROR(ReadInt(j, "num_experts_per_tok", &c.num_experts_per_tok, true));
  RETURN_IF_ERROR(ReadInt(j, "n_group", &c.n_group, false));
  RETURN_IF_ERROR(ReadInt(j, "topk_group", &c.topk_group, false));
  RETURN_IF_ERROR(ReadInt(j, "num_shared_experts", &c.num_shared_experts, false));
  RETURN_IF_ERROR(ReadDouble(j, "routed_scaling_factor", &c.routed_scaling_factor));
  RETURN_IF_ERROR(ReadInt(j, "first_k_dense_replace", &c.first_k_dense_replace, false));
  RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta));
  RETURN_IF_ERROR(ReadDouble(j, "partial_rotary_factor", &c.partial_rotary_factor));
  RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", &c.max_position_embeddings, true));
  RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size, true));
  RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  RETURN_IF_ERROR(ReadBool(j, "use_qk_norm", &c.use_qk_norm));
  RETURN_IF_ERROR(ReadBool(j, "use_qkv_bias", &c.use_qkv_bias));
  RETURN_IF_ERROR(ReadBool(j, "use_bias", &c.use_bias));
  RETURN_IF_ERROR(ReadInt(j, "num_nextn_predict_layers", &c.num_nextn_predict_layers, false));
  RETURN_IF_ERROR(ReadEos(j, &c.eos_token_ids));
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    return absl::UnimplementedError("config.json rope_scaling is set; only null is supported");
  }
  RETURN_IF_ERROR(Positive(c.hidden_size, "hidden_size"));
  RETURN_IF_ERROR(Positive(c.num_hidden_layers, "num_hidden_layers"));
  RETURN_IF_ERROR(Positive(c.num_attention_heads, "num_attention_heads"));
  RETURN_IF_ERROR(Positive(c.num_key_value_heads, "num_key_value_heads"));
  RETURN_IF_ERROR(Positive(c.head_dim, "head_dim"));
  RETURN_IF_ERROR(Positive(c.layer_group_size, "layer_group_size"));
  RETURN_IF_ERROR(Positive(c.group_norm_size, "group_norm_size"));
  RETURN_IF_ERROR(Positive(c.num_experts, "num_experts"));
  RETURN_IF_ERROR(Positive(c.num_experts_per_tok, "num_experts_per_tok"));
  RETURN_IF_ERROR(Positive(c.n_group, "n_group"));
  RETURN_IF_ERROR(Positive(c.topk_group, "topk_group"));
  RETURN_IF_ERROR(Positive(c.max_position_embeddings, "max_position_embeddings"));
  RETURN_IF_ERROR(Positive(c.vocab_size, "vocab_size"));
  // Limits far above any real checkpoint keep every size derived from the config (projection
  // rows, state bytes of a full context, per-layer loops) within int64.
  constexpr int64_t kMaxLayers = 1 << 12, kMaxHeads = 1 << 12, kMaxWidth = 1 << 22;
  constexpr int64_t kMaxExperts = 1 << 16, kMaxPositions = 1 << 24, kMaxVocab = 1 << 24;
  RETURN_IF_ERROR(InRange(c.hidden_size, "hidden_size", 1, kMaxWidth));
  RETURN_IF_ERROR(InRange(c.num_hidden_layers, "num_hidden_layers", 1, kMaxLayers));
  RETURN_IF_ERROR(InRange(c.num_attention_heads, "num_attention_heads", 1, kMaxHeads));
  RETURN_IF_ERROR(InRange(c.intermediate_size, "intermediate_size", 0, kMaxWidth));
  RETURN_IF_ERROR(InRange(c.moe_intermediate_size, "moe_intermediate_size", 0, kMaxWidth));
  RETURN_IF_ERROR(InRange(c.moe_shared_expert_intermediate_size,
                          "moe_shared_expert_intermediate_size", 0, kMaxWidth));
  RETURN_IF_ERROR(InRange(c.num_experts, "num_experts", 1, kMaxExperts));
  RETURN_IF_ERROR(InRange(c.num_shared_experts, "num_shared_experts", 0, kMaxExperts));
  RETURN_IF_ERROR(InRange(c.first_k_dense_replace, "first_k_dense_replace", 0, kMaxLayers));
  RETURN_IF_ERROR(
      InRange(c.num_nextn_predict_layers, "num_nextn_predict_layers", 0, kMaxLayers));
  RETURN_IF_ERROR(
      InRange(c.max_position_embeddings, "max_position_embeddings", 1, kMaxPositions));
  RETURN_IF_ERROR(InRange(c.vocab_size, "vocab_size", 1, kMaxVocab));
  if (c.head_dim > 512 || c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim ", c.head_dim, " must be even and at most 512"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads ", c.num_attention_heads,
                                                   " is not a multiple of num_key_value_heads ",
                                                   c.num_key_value_heads));
  }
  if ((c.num_attention_heads * c.head_dim) % c.group_norm_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_norm_size ", c.group_norm_size, " does not divide the ",
                     c.num_attention_heads * c.head_dim, " attention channels"));
  }
  if (c.num_experts % c.n_group != 0 || c.topk_group > c.n_group) {
    return absl::InvalidArgumentError(absl::StrCat("num_experts ", c.num_experts, ", n_group ",
                                                   c.n_group, ", topk_group ", c.topk_group,
                                                   " do not form valid expert groups"));
  }
  if (c.num_experts_per_tok > c.num_experts / c.n_group * c.topk_group) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_experts_per_tok ", c.num_experts_per_tok, " exceeds the ",
                     c.num_experts / c.n_group * c.topk_group, " experts of the selected groups"));
  }
  if (c.use_qkv_bias || c.use_bias) {
    return absl::UnimplementedError("use_qkv_bias / use_bias checkpoints are not supported");
  }
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("partial_rotary_factor ",
                                                   c.partial_rotary_factor, " is outside (0, 1]"));
  }
  if (c.rotary_dim() <= 0 || c.rotary_dim() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("partial_rotary_factor ", c.partial_rotary_factor, " gives rotary dim ",
                     c.rotary_dim(), "; it must be even and positive"));
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  ASSIGN_OR_RETURN(std::string text,
                   base::ReadFileToString((fs::path(dir) / "config.json").string()));
  ASSIGN_OR_RETURN(ModelConfig c, FromJson(text));
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen_path)) {
    ASSIGN_OR_RETURN(std::string gen_text, base::ReadFileToString(gen_path));
    Json g = Json::parse(gen_text, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError("generation_config.json is not a valid JSON object");
    }
    std::vector<int64_t> eos;
    RETURN_IF_ERROR(ReadEos(g, &eos));
    for (int64_t id : eos) {
      if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end()) {
        c.eos_token_ids.push_back(id);
      }
    }
  }
  for (int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("eos token id ", id, " is outside the vocabulary of ", c.vocab_size));
    }
  }
  return c;
}

std::string ModelConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["architectures"] = {"BailingMoeLinearV2ForCausalLM"};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["layer_group_size"] = layer_group_size;
  j["group_norm_size"] = group_norm_size;
  j["intermediate_size"] = intermediate_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["moe_shared_expert_intermediate_size"] = moe_shared_expert_intermediate_size;
  j["num_experts"] = num_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["num_shared_experts"] = num_shared_experts;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["score_function"] = "sigmoid";
  j["moe_router_enable_expert_bias"] = true;
  j["norm_topk_prob"] = true;
  j["router_dtype"] = "fp32";
  j["rope_theta"] = rope_theta;
  j["partial_rotary_factor"] = partial_rotary_factor;
  j["rope_scaling"] = nullptr;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["use_qk_norm"] = use_qk_norm;
  j["use_qkv_bias"] = use_qkv_bias;
  j["use_bias"] = use_bias;
  j["use_rmsnorm"] = true;
  j["linear_silu"] = false;
  j["hidden_act"] = "silu";
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
    j["pad_token_id"] = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    j["eos_token_id"] = eos_token_ids;
  }
  j["torch_dtype"] = torch_dtype;
  j["transformers_version"] = "4.56.1";
  return j.dump(2);
}

bool ModelConfig::IsSoftmaxLayer(int64_t layer) const {
  return (layer + 1) % layer_group_size == 0 ||
         layer >= (num_hidden_layers / layer_group_size) * layer_group_size;
}

int64_t ModelConfig::rotary_dim() const {
  return static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor);
}

int64_t ModelConfig::num_softmax_layers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < num_hidden_layers; ++i) n += IsSoftmaxLayer(i) ? 1 : 0;
  return n;
}

std::vector<float> ModelConfig::LogDecay(int64_t layer, DecayVariant variant) const {
  const std::vector<double> base = BaseSlopes(num_attention_heads);
  const double n = static_cast<double>(num_hidden_layers);
  double factor;
  if (num_hidden_layers <= 1) {
    factor = 1.0 + 1e-5;
  } else if (variant == DecayVariant::kHf) {
    factor = 1.0 - (static_cast<double>(layer) - 1.0) / (n - 1.0) + 1e-5;
  } else {
    factor = 1.0 - static_cast<double>(layer) / (n - 1.0) + 1e-5;
  }
  std::vector<float> g(num_attention_heads);
  for (int64_t h = 0; h < num_attention_heads; ++h) {
    g[h] = -static_cast<float>(static_cast<float>(base[h]) * static_cast<float>(factor));
  }
  return g;
}

}  // namespace ringserve::model
