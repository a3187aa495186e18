#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/safetensors.h"

namespace ringserve::kernels {

// A weight matrix prepared by a backend for its GEMMs, torch Linear layout [rows=out, cols=in].
// `data` is backend memory (host for CPU, device for CUDA) in the backend's weight dtype; the CPU
// backend points into the mapped checkpoint. A weight stacked from two stored matrices that do
// not lie back to back keeps rows [split_row, rows) at `tail` (CPU only; null when contiguous).
struct Weight {
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  base::DType dtype = base::DType::kF32;
  const void* tail = nullptr;
  int64_t split_row = 0;

  size_t bytes() const { return static_cast<size_t>(rows * cols) * base::DTypeSize(dtype); }
  // Row r's first element.
  const void* Row(int64_t r) const {
    const size_t row_bytes = static_cast<size_t>(cols) * base::DTypeSize(dtype);
    if (tail != nullptr && r >= split_row) {
      return static_cast<const uint8_t*>(tail) + static_cast<size_t>(r - split_row) * row_bytes;
    }
    return static_cast<const uint8_t*>(data) + static_cast<size_t>(r) * row_bytes;
  }
};

// Owned backend memory. Freed by its backend's deleter.
using Buffer = std::unique_ptr<void, void (*)(void*)>;

// Sampling parameters of one row of logits. temperature 0 means greedy.
struct SamplingParams {
  float temperature = 1.0f;
  int32_t top_k = 0;   // 0 = off
  float top_p = 1.0f;  // (0, 1]
  float min_p = 0.0f;  // [0, 1]
  uint64_t seed = 0;
  uint64_t position = 0;  // the absolute position being sampled; the draw is f(seed, position)
};

// y[m, n] = x[m, k] * w[n, k]^T (+ y when accumulate).
struct GemmParams {
  const float* x;  // [m, k], row stride ldx
  int64_t m;
  int64_t ldx;
  const Weight* w;
  float* y;  // [m, n], row stride ldy
  int64_t ldy;
  bool accumulate = false;
};

// y = RMSNorm over groups of `cols / groups` channels of each row, times weight[cols].
struct RmsNormParams {
  const float* x;  // [rows, cols], row stride ldx
  int64_t ldx;
  float* y;  // [rows, cols], row stride ldy (may equal x)
  int64_t ldy;
  const float* weight;  // [cols], fp32
  int64_t rows;
  int64_t cols;
  int64_t groups = 1;
  float eps;
};

// Partial NeoX RoPE, in place, on `heads` heads of each row: the first rotary_dim channels of
// each head rotate by position * theta^(-2j/rotary_dim).
struct RopeParams {
  float* x;  // [rows, heads * head_dim], row stride ld
  int64_t ld;
  int64_t rows;
  int64_t heads;
  int64_t head_dim;
  int64_t rotary_dim;
  const int32_t* positions;  // [rows]
  double theta;
};

// Linear attention (simple GLA) over T tokens of one sequence, state carried in and out:
// S_t = exp(g_h) S_{t-1} + k_t v_t^T; o_t = scale * q_t^T S_t.
struct LinearAttentionParams {
  const float* q;  // [T, H, D] at row stride ld
  const float* k;
  const float* v;
  int64_t ld;
  float* out;              // [T, H * D], row stride H * D
  float* state;            // [H, D, D] (k-dim major), fp32, in/out
  const float* log_decay;  // [H], g_h < 0
  int64_t tokens;
  int64_t heads;
  int64_t head_dim;
  float scale;
  int64_t block = 64;  // inner chunk length
};

// One linear-attention decode step for a batch of sequences (one token each).
struct LinearDecodeParams {
  const float* q;  // [B, H, D] at row stride ld
  const float* k;
  const float* v;
  int64_t ld;
  float* out;  // [B, H * D]
  // [B] pointers to 16-byte aligned [H, D, D] fp32 states; the array itself is backend memory.
  float* const* states;
  const float* log_decay;  // [H]
  int64_t batch;
  int64_t heads;
  int64_t head_dim;
  float scale;
};

// Writes new K/V rows into one sequence's cache, then causal softmax attention of T new
// queries (positions past..past+T-1) over cache positions [0, past + T). The cache holds
// K and V as [Hkv, capacity, D] in bf16; GQA maps query head h to kv head h / (H / Hkv).
struct SoftmaxAttentionParams {
  const float* q;  // [T, H, D] at row stride ld
  const float* k;  // [T, Hkv, D] at row stride ld (new keys, already normed and rotated)
  const float* v;
  int64_t ld;
  float* out;         // [T, H * D]
  uint16_t* k_cache;  // [Hkv, capacity, D], bf16
  uint16_t* v_cache;
  int64_t capacity;
  int64_t past;
  int64_t tokens;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  float scale;
};

// One sequence's KV cache in a batched decode step. Backends read it when the call runs and
// cannot check it: the caller guarantees past < capacity and 16-byte aligned caches.
struct KvCacheRef {
  uint16_t* k_cache;  // [Hkv, capacity, D], bf16
  uint16_t* v_cache;
  int64_t capacity;
  int64_t past;  // tokens already cached; this step's token is stored at position `past`
};

// One softmax-attention decode step for a batch of sequences (one token each): stores each
// sequence's new K/V row at its `past`, then attends its query over cache positions [0, past].
// Everything a step changes (the caches, their lengths) is read from `seqs` when the call runs,
// so a captured Graph of this call serves any batch of B sequences.
struct SoftmaxDecodeParams {
  const float* q;  // [B, H, D] at row stride ld
  const float* k;  // [B, Hkv, D] at row stride ld (already normed and rotated)
  const float* v;
  int64_t ld;
  float* out;              // [B, H * D]
  const KvCacheRef* seqs;  // [B], backend memory
  int64_t batch;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  float scale;
};

// Group-limited top-k MoE routing of T tokens (sigmoid scores in fp32).
struct MoeRouteParams {
  const float* logits;  // [T, E] router logits, fp32
  const float* bias;    // [E] selection bias (may be null)
  int32_t* expert_ids;  // [T, K] out
  float* weights;       // [T, K] out: p / sum(p) * scale
  int64_t tokens;
  int64_t experts;
  int64_t top_k;
  int64_t groups;
  int64_t top_groups;
  float routed_scaling;
};

// y[t] += sum_k weights[t,k] * Expert_{ids[t,k]}(x[t]), each expert SwiGLU with a fused
// gate_up [2I, Hd] and down [Hd, I].
struct MoeExpertsParams {
  const float* x;             // [T, Hd]
  float* y;                   // [T, Hd], accumulated
  const int32_t* expert_ids;  // [T, K]
  const float* weights;       // [T, K]
  int64_t tokens;
  int64_t hidden;
  int64_t top_k;
  const std::vector<Weight>* gate_up;  // E weights [2I, Hd]
  const std::vector<Weight>* down;     // E weights [Hd, I]
};

// A recorded sequence of backend calls (Backend::BeginCapture), run again with the same
// arguments by Replay. Data behind the arguments' pointers is read when the calls run, so what
// changes between replays lives in backend memory the recording points at. Owned by whoever
// ended the capture; must not outlive its backend. Not thread-safe (like its backend).
class Graph {
 public:
  virtual ~Graph() = default;
  // Queues the recorded calls; their errors surface at the next Synchronize. FailedPrecondition
  // (nothing queued) when the backend has since moved scratch memory the recording uses: capture
  // again.
  virtual absl::Status Replay() = 0;
};

// The compute backend of the model. Every pointer in a params struct is backend memory.
// Calls are ordered (a backend may queue them on a stream); Synchronize waits for all.
// Implementations are not thread-safe: one thread drives a backend at a time.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;

  virtual absl::StatusOr<Buffer> Allocate(size_t bytes) = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void Fill(float* x, float value, int64_t n) = 0;
  virtual absl::Status Synchronize() = 0;

  // Converts a checkpoint tensor (2-D, BF16/F16/F32) into the backend's weight format. The
  // weight may point into the tensor's data (the CPU backend does), which must then outlive it.
  virtual absl::StatusOr<Weight> UploadWeight(const base::TensorView& tensor) = 0;
  // One weight of `top`'s rows then `bottom`'s (fused projections); both have the same columns
  // and dtype. By default a stacked copy goes through UploadWeight.
  virtual absl::StatusOr<Weight> UploadStackedWeight(const std::string& name,
                                                     const base::TensorView& top,
                                                     const base::TensorView& bottom);
  // Uploads a 1-D checkpoint tensor as fp32 (norm weights, biases).
  virtual absl::StatusOr<const float*> UploadVector(const base::TensorView& tensor) = 0;

  // Between BeginCapture and EndCapture, calls are recorded into a Graph instead of run. Only
  // the compute calls (Embed to MoeExperts), Fill and CopyDeviceToDevice can be recorded; any
  // other call fails the capture, and EndCapture returns that error. Recorded calls must fit the
  // scratch memory the same calls used before the capture: run them once first.
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<std::unique_ptr<Graph>> EndCapture() = 0;
  // The most rows (tokens) one recorded call may process.
  virtual int64_t max_capture_rows() const = 0;

  // out[t] = table[ids[t]] (ids are backend memory, already validated against the table).
  virtual void Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) = 0;
  virtual void Gemm(const GemmParams& p) = 0;
  virtual void RmsNorm(const RmsNormParams& p) = 0;
  virtual void Rope(const RopeParams& p) = 0;
  // out[i] = silu(gu[i, j]) * gu[i, I + j] for gu [rows, 2I].
  virtual void SiluMul(const float* gu, int64_t rows, int64_t inter, float* out) = 0;
  // x[i, j] *= sigmoid(g[i, j]), x and g [rows, cols] at row strides ldx and ldg.
  virtual void SigmoidMul(float* x, int64_t ldx, const float* g, int64_t ldg, int64_t rows,
                          int64_t cols) = 0;
  // y += x, n elements.
  virtual void Add(float* y, const float* x, int64_t n) = 0;
  virtual void LinearAttention(const LinearAttentionParams& p) = 0;
  virtual void LinearAttentionDecode(const LinearDecodeParams& p) = 0;
  virtual void SoftmaxAttention(const SoftmaxAttentionParams& p) = 0;
  virtual void SoftmaxAttentionDecode(const SoftmaxDecodeParams& p) = 0;
  virtual void MoeRoute(const MoeRouteParams& p) = 0;
  virtual void MoeExperts(const MoeExpertsParams& p) = 0;
  // Samples one token per row of logits [rows, vocab]; ids are written to host memory.
  virtual void Sample(const float* logits, int64_t rows, int64_t vocab,
                      const SamplingParams* params, int32_t* ids) = 0;
};

// OK when `top` and `bottom` can be stacked into the weight `name` (UploadStackedWeight).
absl::Status CheckStackable(const std::string& name, const base::TensorView& top,
                            const base::TensorView& bottom);

// Creates the backend named "cpu" or "cuda" with `threads` CPU threads (0 = all cores).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int threads);

}  // namespace ringserve::kernels
