#include "common/model/model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
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
  m->set_max_graph_batch(options.max_graph_batch);
  return m;
}

void HybridModel::set_max_graph_batch(int64_t batch) {
  graphs_.clear();
  capture_failed_.clear();
  graph_pass_ = PassMemory();
  max_graph_batch_ = std::clamp<int64_t>(batch, 0, backend_->max_capture_rows());
}

absl::StatusOr<std::unique_ptr<SequenceState>> HybridModel::NewState(int64_t capacity) const {
  return SequenceState::Create(config_, backend_, capacity);
}

absl::Status HybridModel::Reserve(PassMemory* mem, int64_t rows, size_t input_bytes,
                                  int64_t logit_rows) {
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size;
  const int64_t inner = c.num_attention_heads * c.head_dim;
  const int64_t proj = std::max(
      {4 * inner, c.softmax_qkv_rows(), 2 * c.intermediate_size, 2 * c.shared_intermediate()});
  const int64_t act = std::max(c.intermediate_size, c.shared_intermediate());
  // Take rounds each of the 8 pieces of a pass up to 16 floats.
  const size_t activations = static_cast<size_t>(
      rows * (2 * hd + proj + inner + act + c.num_experts + 2 * c.num_experts_per_tok) + 8 * 16);
  const size_t logits = static_cast<size_t>(logit_rows * c.vocab_size);
  mem->used = 0;
  if (activations > mem->activation_floats) {
    mem->activations = kernels::Buffer(nullptr, nullptr);
    ASSIGN_OR_RETURN(mem->activations, backend_->Allocate(activations * sizeof(float)));
    mem->activation_floats = activations;
  }
  if (input_bytes > mem->input_bytes) {
    mem->inputs = kernels::Buffer(nullptr, nullptr);
    ASSIGN_OR_RETURN(mem->inputs, backend_->Allocate(input_bytes));
    mem->input_bytes = input_bytes;
  }
  if (logits > mem->logits_floats) {
    mem->logits = kernels::Buffer(nullptr, nullptr);
    ASSIGN_OR_RETURN(mem->logits, backend_->Allocate(logits * sizeof(float)));
    mem->logits_floats = logits;
  }
  return absl::OkStatus();
}

float* HybridModel::Take(PassMemory* mem, size_t floats) {
  float* p = static_cast<float*>(mem->activations.get()) + mem->used;
  mem->used += (floats + 15) / 16 * 16;
  return p;
}

void HybridModel::Forward(PassMemory* mem, int64_t rows, size_t ids_offset, size_t positions_offset,
                          const AttentionFn& attention, int64_t logit_rows) {
  const ModelConfig& c = config_;
  kernels::Backend* be = backend_;
  const int64_t hd = c.hidden_size;
  const int64_t heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads;
  const int64_t d = c.head_dim;
  const int64_t inner = heads * d;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const char* inputs = static_cast<const char*>(mem->inputs.get());
  const auto* ids = reinterpret_cast<const int32_t*>(inputs + ids_offset);
  const auto* positions = reinterpret_cast<const int32_t*>(inputs + positions_offset);

  mem->used = 0;
  float* x = Take(mem, rows * hd);
  float* a = Take(mem, rows * hd);
  const int64_t proj_width = std::max(
      {4 * inner, c.softmax_qkv_rows(), 2 * c.intermediate_size, 2 * c.shared_intermediate()});
  float* proj = Take(mem, rows * proj_width);
  float* o = Take(mem, rows * inner);
  float* act = Take(mem, rows * std::max(c.intermediate_size, c.shared_intermediate()));
  float* router_logits = Take(mem, rows * c.num_experts);
  auto* expert_ids = reinterpret_cast<int32_t*>(Take(mem, rows * c.num_experts_per_tok));
  float* expert_w = Take(mem, rows * c.num_experts_per_tok);
  be->Embed(weights_->embedding, ids, rows, x);

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
    be->Rope({proj, ld, rows, heads, d, c.rotary_dim(), positions, c.rope_theta});
    be->Rope({proj + inner, ld, rows, k_heads, d, c.rotary_dim(), positions, c.rope_theta});
    attention(w, linear_index, softmax_index, proj, proj + inner, proj + inner + k_heads * d, ld,
              o);
    if (!w.softmax) {
      norm(o, inner, o, inner, w.g_norm, rows, inner, c.group_norm_size);
      be->SigmoidMul(o, inner, proj + 3 * inner, ld, rows, inner);
      ++linear_index;
    } else {
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
  if (logit_rows == 0) return;
  norm(x + (rows - logit_rows) * hd, hd, a, hd, weights_->final_norm, logit_rows, hd, 1);
  be->Gemm({a, logit_rows, hd, &weights_->lm_head, static_cast<float*>(mem->logits.get()),
            c.vocab_size, false});
}

HybridModel::DecodeInputs HybridModel::DecodeLayout(int64_t batch) const {
  auto align = [](size_t x) { return (x + 63) / 64 * 64; };
  const size_t b = static_cast<size_t>(batch);
  DecodeInputs in;
  in.ids = 0;
  in.positions = align(b * sizeof(int32_t));
  in.states = in.positions + align(b * sizeof(int32_t));
  in.caches =
      in.states + align(static_cast<size_t>(config_.num_linear_layers()) * b * sizeof(float*));
  in.bytes = in.caches + align(static_cast<size_t>(config_.num_softmax_layers()) * b *
                               sizeof(kernels::KvCacheRef));
  return in;
}

void HybridModel::DecodeForward(PassMemory* mem, int64_t batch) {
  const ModelConfig& c = config_;
  const DecodeInputs in = DecodeLayout(batch);
  char* inputs = static_cast<char*>(mem->inputs.get());
  auto* states = reinterpret_cast<float* const*>(inputs + in.states);
  auto* caches = reinterpret_cast<const kernels::KvCacheRef*>(inputs + in.caches);
  const int64_t heads = c.num_attention_heads;
  const int64_t d = c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Forward(
      mem, batch, in.ids, in.positions,
      [&](const LayerWeights& w, int64_t li, int64_t si, const float* q, const float* k,
          const float* v, int64_t ld, float* o) {
        if (!w.softmax) {
          backend_->LinearAttentionDecode(
              {q, k, v, ld, o, states + li * batch, w.log_decay, batch, heads, d, scale});
        } else {
          backend_->SoftmaxAttentionDecode(
              {q, k, v, ld, o, caches + si * batch, batch, heads, c.num_key_value_heads, d, scale});
        }
      },
      batch);
}

void HybridModel::CaptureDecode(int64_t batch) {
  absl::StatusOr<std::unique_ptr<kernels::Graph>> graph =
      [&]() -> absl::StatusOr<std::unique_ptr<kernels::Graph>> {
    RETURN_IF_ERROR(backend_->BeginCapture());
    DecodeForward(&graph_pass_, batch);
    return backend_->EndCapture();
  }();
  if (!graph.ok()) {
    // The step itself ran eagerly and is fine; steps of this size stay eager.
    capture_failed_.insert(batch);
    RS_LOG(kWarning) << "event=decode_graph_capture_failed batch=" << batch
                     << " status=" << base::Quote(graph.status().ToString());
    return;
  }
  graphs_[batch] = *std::move(graph);
  RS_LOG(kDebug) << "event=decode_graph_captured batch=" << batch;
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
  const ModelConfig& c = config_;
  const int64_t vocab = c.vocab_size;
  const int64_t heads = c.num_attention_heads;
  const int64_t d = c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  if (logits != nullptr) logits->clear();
  std::vector<int32_t> inputs;  // ids, then positions
  for (size_t begin = 0; begin < tokens.size(); begin += chunk_tokens) {
    const int64_t len = static_cast<int64_t>(std::min<size_t>(chunk_tokens, tokens.size() - begin));
    const bool last = begin + len == tokens.size();
    const int64_t logit_rows =
        mode == LogitsMode::kAll ? len : (last && mode == LogitsMode::kLast ? 1 : 0);
    const int64_t past = state->position();
    inputs.assign(tokens.begin() + begin, tokens.begin() + begin + len);
    for (int64_t i = 0; i < len; ++i) inputs.push_back(static_cast<int32_t>(past + i));
    RETURN_IF_ERROR(Reserve(&pass_, len, inputs.size() * sizeof(int32_t), logit_rows));
    backend_->CopyToDevice(pass_.inputs.get(), inputs.data(), inputs.size() * sizeof(int32_t));
    Forward(
        &pass_, len, 0, len * sizeof(int32_t),
        [&](const LayerWeights& w, int64_t li, int64_t si, const float* q, const float* k,
            const float* v, int64_t ld, float* o) {
          if (!w.softmax) {
            backend_->LinearAttention(
                {q, k, v, ld, o, state->linear_state(li), w.log_decay, len, heads, d, scale});
          } else {
            backend_->SoftmaxAttention({q, k, v, ld, o, state->k_cache(si), state->v_cache(si),
                                        state->capacity(), past, len, heads, c.num_key_value_heads,
                                        d, scale});
          }
        },
        logit_rows);
    state->set_position(past + len);
    if (logits != nullptr && logit_rows > 0) {
      const size_t old = logits->size();
      logits->resize(old + logit_rows * vocab);
      backend_->CopyToHost(logits->data() + old, pass_.logits.get(),
                           logit_rows * vocab * sizeof(float));
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
  for (SequenceState* s : states) RETURN_IF_ERROR(CheckRoom(*s, 1));
  const int64_t batch = static_cast<int64_t>(states.size());
  const int64_t vocab = config_.vocab_size;

  // The input block: ids, positions, per-layer state pointers and cache references.
  const DecodeInputs in = DecodeLayout(batch);
  std::vector<char> host(in.bytes);
  auto* ids = reinterpret_cast<int32_t*>(host.data() + in.ids);
  auto* positions = reinterpret_cast<int32_t*>(host.data() + in.positions);
  auto* state_ptrs = reinterpret_cast<float**>(host.data() + in.states);
  auto* caches = reinterpret_cast<kernels::KvCacheRef*>(host.data() + in.caches);
  for (int64_t b = 0; b < batch; ++b) {
    const SequenceState& s = *states[b];
    ids[b] = tokens[b];
    positions[b] = static_cast<int32_t>(s.position());
    for (int64_t li = 0; li < s.num_linear(); ++li) state_ptrs[li * batch + b] = s.linear_state(li);
    for (int64_t si = 0; si < s.num_softmax(); ++si) {
      caches[si * batch + b] = {s.k_cache(si), s.v_cache(si), s.capacity(), s.position()};
    }
  }

  const bool graphed = batch <= max_graph_batch_;
  PassMemory* mem = graphed ? &graph_pass_ : &pass_;
  if (graphed) {
    // Sized for the largest graphed batch at once: graphs point into this memory.
    RETURN_IF_ERROR(
        Reserve(mem, max_graph_batch_, DecodeLayout(max_graph_batch_).bytes, max_graph_batch_));
  } else {
    RETURN_IF_ERROR(Reserve(mem, batch, in.bytes, batch));
  }
  backend_->CopyToDevice(mem->inputs.get(), host.data(), in.bytes);
  bool replayed = false;
  if (auto it = graphs_.find(batch); graphed && it != graphs_.end()) {
    const absl::Status replay = it->second->Replay();
    if (absl::IsFailedPrecondition(replay)) {
      // The backend moved scratch memory that every graph may use: capture them again.
      RS_LOG(kInfo) << "event=decode_graphs_stale graphs=" << graphs_.size();
      graphs_.clear();
    } else {
      RETURN_IF_ERROR(replay);
      replayed = true;
      ++graph_replays_;
    }
  }
  if (!replayed) DecodeForward(mem, batch);
  for (SequenceState* s : states) s->set_position(s->position() + 1);
  if (params != nullptr) {
    backend_->Sample(static_cast<const float*>(mem->logits.get()), batch, vocab, params, sampled);
  }
  if (logits != nullptr) {
    logits->resize(batch * vocab);
    backend_->CopyToHost(logits->data(), mem->logits.get(), batch * vocab * sizeof(float));
  }
  RETURN_IF_ERROR(backend_->Synchronize());
  if (graphed && !replayed && !capture_failed_.contains(batch)) CaptureDecode(batch);
  return absl::OkStatus();
}

absl::StatusOr<int32_t> HybridModel::SampleLast(const kernels::SamplingParams& params) {
  if (pass_.logits == nullptr) return absl::FailedPreconditionError("no logits to sample from");
  int32_t id = 0;
  backend_->Sample(static_cast<const float*>(pass_.logits.get()), 1, config_.vocab_size, &params,
                   &id);
  RETURN_IF_ERROR(backend_->Synchronize());
  return id;
}

size_t HybridModel::checkpoint_bytes() const {
  return static_cast<size_t>(config_.num_linear_layers() * config_.num_attention_heads *
                             config_.head_dim * config_.head_dim) *
         sizeof(float);
}

size_t HybridModel::kv_bytes_per_token() const {
  return static_cast<size_t>(2 * config_.num_softmax_layers() * config_.num_key_value_heads *
                             config_.head_dim) *
         sizeof(uint16_t);
}

absl::StatusOr<kernels::Buffer> HybridModel::SaveLinearStates(const SequenceState& state) {
  ASSIGN_OR_RETURN(kernels::Buffer out, backend_->Allocate(checkpoint_bytes()));
  if (state.num_linear() > 0) {
    backend_->CopyDeviceToDevice(out.get(), state.linear_state(0), state.linear_bytes_total());
  }
  return out;
}

namespace {

// Calls copy(sequence span, offset in a SavedKv buffer) for every piece of the KV of tokens
// [begin, end), in the SavedKv layout.
template <typename Copy>
void ForEachKvSpan(const SequenceState& state, int64_t begin, int64_t end, Copy copy) {
  size_t offset = 0;
  for (int64_t l = 0; l < state.num_softmax(); ++l) {
    for (bool value : {false, true}) {
      for (const Span& span : state.KvSpans(l, value, begin, end)) {
        copy(span, offset);
        offset += span.bytes;
      }
    }
  }
}

}  // namespace

absl::StatusOr<kernels::Buffer> HybridModel::SaveKv(const SequenceState& state, int64_t begin,
                                                    int64_t end) {
  if (begin < 0 || begin >= end || end > state.position()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot save the KV of tokens [", begin, ", ",
                                                   end, ") of a sequence at position ",
                                                   state.position()));
  }
  ASSIGN_OR_RETURN(kernels::Buffer out,
                   backend_->Allocate(static_cast<size_t>(end - begin) * kv_bytes_per_token()));
  char* base = static_cast<char*>(out.get());
  ForEachKvSpan(state, begin, end, [&](const Span& span, size_t offset) {
    backend_->CopyDeviceToDevice(base + offset, span.data, span.bytes);
  });
  return out;
}

absl::Status HybridModel::Restore(const void* linear_states, std::span<const SavedKv> kv,
                                  int64_t tokens, SequenceState* state) {
  if (tokens <= 0 || tokens > state->capacity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot restore ", tokens, " tokens into a sequence of capacity ", state->capacity()));
  }
  int64_t covered = 0;
  for (const SavedKv& piece : kv) {
    if (piece.begin != covered || piece.end <= piece.begin) {
      return absl::InvalidArgumentError(absl::StrCat("saved KV [", piece.begin, ", ", piece.end,
                                                     ") does not continue at token ", covered));
    }
    covered = piece.end;
  }
  if (covered != tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("saved KV covers ", covered, " tokens, not the ", tokens, " restored"));
  }
  if (state->num_linear() > 0) {
    backend_->CopyDeviceToDevice(state->linear_state(0), linear_states,
                                 state->linear_bytes_total());
  }
  for (const SavedKv& piece : kv) {
    const char* base = static_cast<const char*>(piece.data);
    ForEachKvSpan(*state, piece.begin, piece.end, [&](const Span& span, size_t offset) {
      backend_->CopyDeviceToDevice(span.data, base + offset, span.bytes);
    });
  }
  state->set_position(tokens);
  return absl::OkStatus();
}

}  // namespace ringserve::model
