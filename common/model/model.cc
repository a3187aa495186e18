#include "common/model/model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::model {

absl::StatusOr<std::unique_ptr<HybridModel>> HybridModel::Load(const std::string& dir,
                                                               kernels::Backend* backend,
                                                               const ModelOptions& options) {
  std::unique_ptr<HybridModel> m(new HybridModel());
  ASSIGN_OR_RETURN(m->config_, ModelConfig::FromDirectory(dir));
  ASSIGN_OR_RETURN(m->store_, base::TensorStore::Open(dir));
  ASSIGN_OR_RETURN(m->weights_,
                   ModelWeights::Load(m->config_, *m->store_, backend, options.decay_variant));
  m->backend_ = backend;
  return m;
}

absl::StatusOr<std::unique_ptr<SequenceState>> HybridModel::NewState(int64_t capacity) const {
  return SequenceState::Create(config_, backend_, capacity);
}

absl::Status HybridModel::EnsureWorkspace(int64_t rows) {
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size;
  const int64_t inner = c.num_attention_heads * c.head_dim;
  const int64_t proj = std::max(
      {4 * inner, c.softmax_qkv_rows(), 2 * c.intermediate_size, 2 * c.shared_intermediate()});
  const int64_t act = std::max(c.intermediate_size, c.shared_intermediate());
  const size_t need = static_cast<size_t>(
      rows * (3 * hd + proj + inner + act + c.num_experts + 2 * c.num_experts_per_tok + 1) +
      16 * 16);
  workspace_used_ = 0;
  if (need <= workspace_floats_) return absl::OkStatus();
  workspace_ = kernels::Buffer(nullptr, nullptr);
  ASSIGN_OR_RETURN(workspace_, backend_->Allocate(need * sizeof(float)));
  workspace_floats_ = need;
  workspace_rows_ = rows;
  return absl::OkStatus();
}

float* HybridModel::Alloc(size_t floats) {
  float* p = static_cast<float*>(workspace_.get()) + workspace_used_;
  workspace_used_ += (floats + 15) / 16 * 16;
  return p;
}

absl::Status HybridModel::Forward(const std::vector<Segment>& segments, LogitsMode mode,
                                  int64_t* rows_out) {
  const ModelConfig& c = config_;
  kernels::Backend* be = backend_;
  const int64_t hd = c.hidden_size;
  const int64_t heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads;
  const int64_t d = c.head_dim;
  const int64_t inner = heads * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float eps = static_cast<float>(c.rms_norm_eps);

  std::vector<int32_t> ids, positions;
  std::vector<int64_t> row_begin;
  bool all_single = true;
  for (const Segment& s : segments) {
    row_begin.push_back(static_cast<int64_t>(ids.size()));
    all_single = all_single && s.tokens.size() == 1;
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      ids.push_back(s.tokens[i]);
      positions.push_back(static_cast<int32_t>(s.state->position() + static_cast<int64_t>(i)));
    }
  }
  const int64_t rows = static_cast<int64_t>(ids.size());
  RETURN_IF_ERROR(EnsureWorkspace(rows));
  float* x = Alloc(rows * hd);
  float* a = Alloc(rows * hd);
  const int64_t proj_width = std::max(
      {4 * inner, c.softmax_qkv_rows(), 2 * c.intermediate_size, 2 * c.shared_intermediate()});
  float* proj = Alloc(rows * proj_width);
  float* o = Alloc(rows * inner);
  float* act = Alloc(rows * std::max(c.intermediate_size, c.shared_intermediate()));
  float* router_logits = Alloc(rows * c.num_experts);
  int32_t* expert_ids = reinterpret_cast<int32_t*>(Alloc(rows * c.num_experts_per_tok));
  float* expert_w = Alloc(rows * c.num_experts_per_tok);
  int32_t* pos_dev = reinterpret_cast<int32_t*>(Alloc(rows));
  be->CopyToDevice(pos_dev, positions.data(), positions.size() * sizeof(int32_t));
  be->Embed(weights_->embedding, ids.data(), rows, x);

  auto norm = [&](const float* in, int64_t ldi, float* out, int64_t ldo, const float* w,
                  int64_t n_rows, int64_t cols, int64_t groups) {
    be->RmsNorm({in, ldi, out, ldo, w, n_rows, cols, groups, eps});
  };
  auto swiglu = [&](const float* in, const kernels::Weight& gate_up, const kernels::Weight& down) {
    const int64_t inter = gate_up.rows / 2;
    be->Gemm({in, rows, hd, &gate_up, proj, gate_up.rows, false});
    be->SiluMul(proj, rows, inter, act);
    be->Gemm({act, rows, inter, &down, x, hd, true});
  };

  int64_t linear_index = 0;
  int64_t softmax_index = 0;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const LayerWeights& w = weights_->layers[layer];
    norm(x, hd, a, hd, w.input_norm, rows, hd, 1);
    const int64_t ld = w.in_proj.rows;
    be->Gemm({a, rows, hd, &w.in_proj, proj, ld, false});
    const int64_t k_heads = w.softmax ? kv_heads : heads;
    norm(proj, ld, proj, ld, w.q_norm, rows, inner, heads);
    norm(proj + inner, ld, proj + inner, ld, w.k_norm, rows, k_heads * d, k_heads);
    be->Rope({proj, ld, rows, heads, d, c.rotary_dim(), pos_dev, c.rope_theta});
    be->Rope({proj + inner, ld, rows, k_heads, d, c.rotary_dim(), pos_dev, c.rope_theta});
    const float* q = proj;
    const float* k = proj + inner;
    const float* v = proj + inner + k_heads * d;
    if (!w.softmax) {
      if (all_single) {
        std::vector<float*> states;
        for (const Segment& s : segments) states.push_back(s.state->linear_state(linear_index));
        be->LinearAttentionDecode({q, k, v, ld, o, states.data(), w.log_decay,
                                   static_cast<int64_t>(segments.size()), heads, d, scale});
      } else {
        for (size_t si = 0; si < segments.size(); ++si) {
          const int64_t r0 = row_begin[si];
          be->LinearAttention({q + r0 * ld, k + r0 * ld, v + r0 * ld, ld, o + r0 * inner,
                               segments[si].state->linear_state(linear_index), w.log_decay,
                               static_cast<int64_t>(segments[si].tokens.size()), heads, d, scale});
        }
      }
      norm(o, inner, o, inner, w.g_norm, rows, inner, c.group_norm_size);
      be->SigmoidMul(o, inner, proj + 3 * inner, ld, rows, inner);
      ++linear_index;
    } else {
      for (size_t si = 0; si < segments.size(); ++si) {
        const int64_t r0 = row_begin[si];
        SequenceState* st = segments[si].state;
        be->SoftmaxAttention(
            {q + r0 * ld, k + r0 * ld, v + r0 * ld, ld, o + r0 * inner, st->k_cache(softmax_index),
             st->v_cache(softmax_index), st->capacity(), st->position(),
             static_cast<int64_t>(segments[si].tokens.size()), heads, kv_heads, d, scale});
      }
      ++softmax_index;
    }
    be->Gemm({o, rows, inner, &w.dense, x, hd, true});
    norm(x, hd, a, hd, w.post_norm, rows, hd, 1);
    if (!w.moe) {
      swiglu(a, w.mlp_gate_up, w.mlp_down);
      continue;
    }
    be->Gemm({a, rows, hd, &w.router, router_logits, c.num_experts, false});
    be->MoeRoute({router_logits, w.expert_bias, expert_ids, expert_w, rows, c.num_experts,
                  c.num_experts_per_tok, c.n_group, c.topk_group,
                  static_cast<float>(c.routed_scaling_factor)});
    be->MoeExperts({a, x, expert_ids, expert_w, rows, hd, c.num_experts_per_tok, &w.expert_gate_up,
                    &w.expert_down});
    if (c.num_shared_experts > 0) swiglu(a, w.shared_gate_up, w.shared_down);
  }
  for (const Segment& s : segments) {
    s.state->set_position(s.state->position() + static_cast<int64_t>(s.tokens.size()));
  }
  *rows_out = 0;
  if (mode == LogitsMode::kNone) return absl::OkStatus();
  std::vector<int64_t> out_rows;
  for (size_t si = 0; si < segments.size(); ++si) {
    const int64_t n = static_cast<int64_t>(segments[si].tokens.size());
    if (mode == LogitsMode::kAll) {
      for (int64_t i = 0; i < n; ++i) out_rows.push_back(row_begin[si] + i);
    } else {
      out_rows.push_back(row_begin[si] + n - 1);
    }
  }
  const int64_t n_out = static_cast<int64_t>(out_rows.size());
  for (int64_t i = 0; i < n_out; ++i) {
    be->CopyDeviceToDevice(a + i * hd, x + out_rows[i] * hd, hd * sizeof(float));
  }
  norm(a, hd, a, hd, weights_->final_norm, n_out, hd, 1);
  const size_t need = static_cast<size_t>(n_out * c.vocab_size);
  if (need > logits_floats_) {
    logits_buf_ = kernels::Buffer(nullptr, nullptr);
    ASSIGN_OR_RETURN(logits_buf_, be->Allocate(need * sizeof(float)));
    logits_floats_ = need;
  }
  be->Gemm({a, n_out, hd, &weights_->lm_head, static_cast<float*>(logits_buf_.get()), c.vocab_size,
            false});
  *rows_out = n_out;
  return absl::OkStatus();
}

namespace {

absl::Status CheckTokens(std::span<const int32_t> tokens, int64_t vocab) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary of ", vocab));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRoom(const SequenceState& s, int64_t tokens) {
  if (s.position() + tokens > s.capacity()) {
    return absl::OutOfRangeError(absl::StrCat("sequence at position ", s.position(), " + ", tokens,
                                              " tokens exceeds its capacity of ", s.capacity()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HybridModel::Prefill(std::span<const int32_t> tokens, SequenceState* state,
                                  int64_t chunk_tokens, LogitsMode mode,
                                  std::vector<float>* logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill needs at least one token");
  if (chunk_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk length ", chunk_tokens, " is not positive"));
  }
  RETURN_IF_ERROR(CheckTokens(tokens, config_.vocab_size));
  RETURN_IF_ERROR(CheckRoom(*state, static_cast<int64_t>(tokens.size())));
  const int64_t vocab = config_.vocab_size;
  if (logits != nullptr) logits->clear();
  for (size_t begin = 0; begin < tokens.size(); begin += chunk_tokens) {
    const size_t len = std::min<size_t>(chunk_tokens, tokens.size() - begin);
    const bool last = begin + len == tokens.size();
    const LogitsMode chunk_mode =
        mode == LogitsMode::kAll ? mode : (last ? mode : LogitsMode::kNone);
    int64_t rows = 0;
    RETURN_IF_ERROR(Forward({{state, tokens.subspan(begin, len)}}, chunk_mode, &rows));
    if (logits != nullptr && rows > 0) {
      const size_t old = logits->size();
      logits->resize(old + rows * vocab);
      backend_->CopyToHost(logits->data() + old, logits_buf_.get(), rows * vocab * sizeof(float));
    }
  }
  return backend_->Synchronize();
}

absl::Status HybridModel::DecodeStep(std::span<SequenceState* const> states,
                                     std::span<const int32_t> tokens,
                                     const kernels::SamplingParams* params, int32_t* sampled,
                                     std::vector<float>* logits) {
  if (states.size() != tokens.size() || states.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("decode step of ", states.size(),
                                                   " sequences got ", tokens.size(), " tokens"));
  }
  RETURN_IF_ERROR(CheckTokens(tokens, config_.vocab_size));
  std::vector<Segment> segments;
  for (size_t i = 0; i < states.size(); ++i) {
    RETURN_IF_ERROR(CheckRoom(*states[i], 1));
    segments.push_back({states[i], tokens.subspan(i, 1)});
  }
  int64_t rows = 0;
  RETURN_IF_ERROR(Forward(segments, LogitsMode::kLast, &rows));
  const int64_t vocab = config_.vocab_size;
  if (params != nullptr) {
    backend_->Sample(static_cast<const float*>(logits_buf_.get()), rows, vocab, params, sampled);
  }
  if (logits != nullptr) {
    logits->resize(rows * vocab);
    backend_->CopyToHost(logits->data(), logits_buf_.get(), rows * vocab * sizeof(float));
  }
  return backend_->Synchronize();
}

absl::StatusOr<int32_t> HybridModel::SampleLast(const kernels::SamplingParams& params) {
  if (logits_buf_ == nullptr) return absl::FailedPreconditionError("no logits to sample from");
  int32_t id = 0;
  backend_->Sample(static_cast<const float*>(logits_buf_.get()), 1, config_.vocab_size, &params,
                   &id);
  RETURN_IF_ERROR(backend_->Synchronize());
  return id;
}

}  // namespace ringserve::model
