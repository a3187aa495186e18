#include "common/model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status_macros.h"

namespace ringserve::model {
namespace {

std::string Layer(int64_t i, const std::string& rest) {
  return absl::StrCat("model.layers.", i, ".", rest);
}

void AddAttention(const ModelConfig& c, int64_t i, bool softmax, std::vector<ExpectedTensor>* out) {
  const int64_t hd = c.hidden_size;
  const int64_t inner = c.num_attention_heads * c.head_dim;
  out->push_back({Layer(i, "attention.query_key_value.weight"),
                  {softmax ? c.softmax_qkv_rows() : c.linear_qkv_rows(), hd}});
  out->push_back({Layer(i, "attention.query_layernorm.weight"), {c.head_dim}});
  out->push_back({Layer(i, "attention.key_layernorm.weight"), {c.head_dim}});
  out->push_back({Layer(i, "attention.dense.weight"), {hd, inner}});
  if (!softmax) {
    out->push_back({Layer(i, "attention.g_proj.weight"), {inner, hd}});
    out->push_back({Layer(i, "attention.g_norm.weight"), {inner}});
  }
}

void AddMoe(const ModelConfig& c, int64_t i, std::vector<ExpectedTensor>* out) {
  const int64_t hd = c.hidden_size;
  out->push_back({Layer(i, "mlp.gate.weight"), {c.num_experts, hd}});
  out->push_back({Layer(i, "mlp.gate.expert_bias"), {c.num_experts}, true});
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const std::string p = absl::StrCat("mlp.experts.", e, ".");
    out->push_back({Layer(i, p + "gate_proj.weight"), {c.moe_intermediate_size, hd}});
    out->push_back({Layer(i, p + "up_proj.weight"), {c.moe_intermediate_size, hd}});
    out->push_back({Layer(i, p + "down_proj.weight"), {hd, c.moe_intermediate_size}});
  }
  if (c.num_shared_experts > 0) {
    out->push_back(
        {Layer(i, "mlp.shared_experts.gate_proj.weight"), {c.shared_intermediate(), hd}});
    out->push_back({Layer(i, "mlp.shared_experts.up_proj.weight"), {c.shared_intermediate(), hd}});
    out->push_back(
        {Layer(i, "mlp.shared_experts.down_proj.weight"), {hd, c.shared_intermediate()}});
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<const base::TensorView*> Check(const base::TensorStore& store,
                                              const ExpectedTensor& e) {
  const base::TensorView* t = store.Find(e.name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("missing tensor '", e.name, "'"));
  if (t->shape != e.shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", e.name, "' has shape ",
                                                   ShapeString(t->shape), "; expected ",
                                                   ShapeString(e.shape)));
  }
  if (t->dtype != base::DType::kBF16 && t->dtype != base::DType::kF16 &&
      t->dtype != base::DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", e.name, "' has dtype ",
                                                   base::DTypeName(t->dtype),
                                                   "; expected BF16, F16 or F32"));
  }
  return t;
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  const int64_t hd = c.hidden_size;
  out.push_back({"model.word_embeddings.weight", {c.vocab_size, hd}});
  for (int64_t i = 0; i < c.num_hidden_layers + c.num_nextn_predict_layers; ++i) {
    const bool mtp = i >= c.num_hidden_layers;
    out.push_back({Layer(i, "input_layernorm.weight"), {hd}});
    out.push_back({Layer(i, "post_attention_layernorm.weight"), {hd}});
    if (mtp) {
      out.push_back({Layer(i, "enorm.weight"), {hd}});
      out.push_back({Layer(i, "hnorm.weight"), {hd}});
      out.push_back({Layer(i, "eh_proj.weight"), {hd, 2 * hd}});
      out.push_back({Layer(i, "final_layernorm.weight"), {hd}});
    }
    AddAttention(c, i, mtp || c.IsSoftmaxLayer(i), &out);
    if (mtp || c.IsMoeLayer(i)) {
      AddMoe(c, i, &out);
    } else {
      out.push_back({Layer(i, "mlp.gate_proj.weight"), {c.intermediate_size, hd}});
      out.push_back({Layer(i, "mlp.up_proj.weight"), {c.intermediate_size, hd}});
      out.push_back({Layer(i, "mlp.down_proj.weight"), {hd, c.intermediate_size}});
    }
  }
  out.push_back({"model.norm.weight", {hd}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, hd}});
  return out;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const ModelConfig& c,
                                                                 const base::TensorStore& store,
                                                                 kernels::Backend* backend,
                                                                 DecayVariant variant) {
  std::map<std::string, const base::TensorView*> found;
  auto w = std::make_unique<ModelWeights>();
  // Loading reads the files front to back; afterwards the backend advises what it keeps using.
  store.Advise(base::Access::kSequential);
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    ASSIGN_OR_RETURN(found[e.name], Check(store, e));
    w->checkpoint_bytes += found[e.name]->bytes;
  }
  auto matrix = [&](const std::string& name) { return backend->UploadWeight(*found.at(name)); };
  auto vec = [&](const std::string& name) { return backend->UploadVector(*found.at(name)); };
  auto fused = [&](const std::string& name, const std::string& top, const std::string& bottom) {
    return backend->UploadStackedWeight(name, *found.at(top), *found.at(bottom));
  };
  auto tiled = [&](const std::string& name, int64_t times) -> absl::StatusOr<const float*> {
    const base::TensorView* t = found.at(name);
    base::TensorData data{name, t->dtype, {times * t->shape[0]}, {}};
    for (int64_t i = 0; i < times; ++i) {
      data.bytes.append(reinterpret_cast<const char*>(t->data), t->bytes);
    }
    return backend->UploadVector(base::ViewOf(data));
  };
  auto swiglu = [&](const std::string& prefix, kernels::Weight* gate_up,
                    kernels::Weight* down) -> absl::Status {
    ASSIGN_OR_RETURN(*gate_up, fused(prefix + "gate_up", prefix + "gate_proj.weight",
                                     prefix + "up_proj.weight"));
    ASSIGN_OR_RETURN(*down, matrix(prefix + "down_proj.weight"));
    return absl::OkStatus();
  };

  ASSIGN_OR_RETURN(w->embedding, matrix("model.word_embeddings.weight"));
  const int64_t heads = c.num_attention_heads;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights l;
    l.softmax = c.IsSoftmaxLayer(i);
    l.moe = c.IsMoeLayer(i);
    ASSIGN_OR_RETURN(l.input_norm, vec(Layer(i, "input_layernorm.weight")));
    ASSIGN_OR_RETURN(l.post_norm, vec(Layer(i, "post_attention_layernorm.weight")));
    const std::string qkv = Layer(i, "attention.query_key_value.weight");
    if (l.softmax) {
      ASSIGN_OR_RETURN(l.in_proj, matrix(qkv));
    } else {
      ASSIGN_OR_RETURN(l.in_proj, fused(Layer(i, "attention.in_proj"), qkv,
                                        Layer(i, "attention.g_proj.weight")));
      ASSIGN_OR_RETURN(l.g_norm, vec(Layer(i, "attention.g_norm.weight")));
      const std::vector<float> decay = c.LogDecay(i, variant);
      ASSIGN_OR_RETURN(kernels::Buffer buffer, backend->Allocate(decay.size() * sizeof(float)));
      backend->CopyToDevice(buffer.get(), decay.data(), decay.size() * sizeof(float));
      l.log_decay = static_cast<const float*>(buffer.get());
      w->decay_buffers.push_back(std::move(buffer));
    }
    ASSIGN_OR_RETURN(l.q_norm, tiled(Layer(i, "attention.query_layernorm.weight"), heads));
    ASSIGN_OR_RETURN(l.k_norm, tiled(Layer(i, "attention.key_layernorm.weight"), heads));
    ASSIGN_OR_RETURN(l.dense, matrix(Layer(i, "attention.dense.weight")));
    if (l.moe) {
      ASSIGN_OR_RETURN(l.router, matrix(Layer(i, "mlp.gate.weight")));
      ASSIGN_OR_RETURN(l.expert_bias, vec(Layer(i, "mlp.gate.expert_bias")));
      l.expert_gate_up.resize(c.num_experts);
      l.expert_down.resize(c.num_experts);
      for (int64_t e = 0; e < c.num_experts; ++e) {
        RETURN_IF_ERROR(swiglu(Layer(i, absl::StrCat("mlp.experts.", e, ".")), &l.expert_gate_up[e],
                               &l.expert_down[e]));
      }
      if (c.num_shared_experts > 0) {
        RETURN_IF_ERROR(swiglu(Layer(i, "mlp.shared_experts."), &l.shared_gate_up, &l.shared_down));
      }
    } else {
      RETURN_IF_ERROR(swiglu(Layer(i, "mlp."), &l.mlp_gate_up, &l.mlp_down));
    }
    w->layers.push_back(std::move(l));
  }
  ASSIGN_OR_RETURN(w->final_norm, vec("model.norm.weight"));
  ASSIGN_OR_RETURN(w->lm_head, matrix(c.tie_word_embeddings ? "model.word_embeddings.weight"
                                                            : "lm_head.weight"));
  store.Advise(base::Access::kNormal);
  return w;
}

}  // namespace ringserve::model
