#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bf16.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/weight_gemm.h"

namespace ringserve::kernels {
namespace {

void FreeHost(void* p) { std::free(p); }

// The recorded calls of one capture.
class CpuGraph : public Graph {
 public:
  explicit CpuGraph(std::vector<std::function<void()>> calls) : calls_(std::move(calls)) {}
  absl::Status Replay() override {
    for (const auto& call : calls_) call();
    return absl::OkStatus();
  }

 private:
  std::vector<std::function<void()>> calls_;
};

// Splits rows so each block carries at least ~32K elements of work.
int64_t Grain(int64_t per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_row));
}

// bf16 matrices, and fp32 ones aligned for float reads, are used where they are stored.
bool UsableInPlace(const base::TensorView& tensor) {
  return tensor.dtype == base::DType::kBF16 ||
         (tensor.dtype == base::DType::kF32 &&
          reinterpret_cast<uintptr_t>(tensor.data) % alignof(float) == 0);
}

}  // namespace

CpuBackend::CpuBackend(int threads) : pool_(threads) {
  // Parallelism comes from our pool; each BLAS call runs on the thread that makes it.
  openblas_set_num_threads(1);
}

bool CpuBackend::RefusedInCapture(const char* what) {
  if (!capturing_) return false;
  if (capture_status_.ok()) {
    capture_status_ =
        absl::FailedPreconditionError(absl::StrCat(what, " is not allowed during graph capture"));
  }
  return true;
}

absl::Status CpuBackend::BeginCapture() {
  if (capturing_) return absl::FailedPreconditionError("a graph capture is already running");
  capturing_ = true;
  recording_.clear();
  capture_status_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Graph>> CpuBackend::EndCapture() {
  if (!capturing_) return absl::FailedPreconditionError("no graph capture is running");
  capturing_ = false;
  std::vector<std::function<void()>> calls = std::move(recording_);
  recording_.clear();
  RETURN_IF_ERROR(std::exchange(capture_status_, absl::OkStatus()));
  return std::make_unique<CpuGraph>(std::move(calls));
}

absl::Status CpuBackend::Synchronize() {
  if (RefusedInCapture("Synchronize")) return capture_status_;
  return absl::OkStatus();
}

absl::StatusOr<Buffer> CpuBackend::Allocate(size_t bytes) {
  if (RefusedInCapture("Allocate")) return capture_status_;
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  return Buffer(p, &FreeHost);
}

void CpuBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (RefusedInCapture("CopyToDevice")) return;
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (RefusedInCapture("CopyToHost")) return;
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  if (Recorded([=, this] { CopyDeviceToDevice(dst, src, bytes); })) return;
  std::memcpy(dst, src, bytes);
}
void CpuBackend::Fill(float* x, float value, int64_t n) {
  if (Recorded([=, this] { Fill(x, value, n); })) return;
  std::fill_n(x, n, value);
}

absl::StatusOr<float*> CpuBackend::Widen(const base::TensorView& tensor) {
  const int64_t n = tensor.NumElements();
  ASSIGN_OR_RETURN(Buffer buffer, Allocate(static_cast<size_t>(n) * sizeof(float)));
  float* out = static_cast<float*>(buffer.get());
  switch (tensor.dtype) {
    case base::DType::kF32:
      std::memcpy(out, tensor.data, static_cast<size_t>(n) * sizeof(float));
      break;
    case base::DType::kBF16: {
      const uint16_t* in = reinterpret_cast<const uint16_t*>(tensor.data);
      pool_.ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = base::Bf16ToFloat(in[i]);
      });
      break;
    }
    case base::DType::kF16: {
      const uint16_t* in = reinterpret_cast<const uint16_t*>(tensor.data);
      for (int64_t i = 0; i < n; ++i) out[i] = base::F16ToFloat(in[i]);
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' has dtype ",
                                                     base::DTypeName(tensor.dtype),
                                                     "; expected BF16, F16 or F32"));
  }
  owned_.push_back(std::move(buffer));
  return out;
}

absl::StatusOr<Weight> CpuBackend::UploadWeight(const base::TensorView& tensor) {
  if (tensor.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' is not a matrix"));
  }
  if (UsableInPlace(tensor)) {
    base::AdviseMapped(tensor.data, tensor.bytes, base::Access::kWillNeed);
    return Weight{tensor.data, tensor.shape[0], tensor.shape[1], tensor.dtype};
  }
  ASSIGN_OR_RETURN(float* data, Widen(tensor));
  return Weight{data, tensor.shape[0], tensor.shape[1], base::DType::kF32};
}

absl::StatusOr<Weight> CpuBackend::UploadStackedWeight(const std::string& name,
                                                       const base::TensorView& top,
                                                       const base::TensorView& bottom) {
  RETURN_IF_ERROR(CheckStackable(name, top, bottom));
  if (!UsableInPlace(top) || !UsableInPlace(bottom)) {
    return Backend::UploadStackedWeight(name, top, bottom);
  }
  ASSIGN_OR_RETURN(Weight w, UploadWeight(top));
  base::AdviseMapped(bottom.data, bottom.bytes, base::Access::kWillNeed);
  w.rows += bottom.shape[0];
  if (top.data + top.bytes != bottom.data) {
    w.tail = bottom.data;
    w.split_row = top.shape[0];
  }
  return w;
}

absl::StatusOr<const float*> CpuBackend::UploadVector(const base::TensorView& tensor) {
  return Widen(tensor);
}

void CpuBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  if (Recorded([=, this, &table] { Embed(table, ids, n, out); })) return;
  for (int64_t i = 0; i < n; ++i) {
    const void* row = table.Row(ids[i]);
    float* dst = out + i * table.cols;
    if (table.dtype == base::DType::kF32) {
      std::memcpy(dst, row, table.cols * sizeof(float));
    } else {
      const uint16_t* src = static_cast<const uint16_t*>(row);
      for (int64_t j = 0; j < table.cols; ++j) dst[j] = base::Bf16ToFloat(src[j]);
    }
  }
}

void CpuBackend::Gemm(const GemmParams& p) {
  if (Recorded([=, this] { Gemm(p); })) return;
  const int64_t n = p.w->rows;
  // Column blocks of whole cache lines; enough blocks for every thread.
  const int64_t grain = std::max<int64_t>(16, n / (4 * pool_.num_threads()) / 16 * 16);
  pool_.ParallelFor((n + grain - 1) / grain, 1, [&](int64_t b, int64_t e) {
    cpu::GemmColumns(p, b * grain, std::min(n, e * grain));
  });
}

void CpuBackend::RmsNorm(const RmsNormParams& p) {
  if (Recorded([=, this] { RmsNorm(p); })) return;
  const int64_t width = p.cols / p.groups;
  pool_.ParallelFor(p.rows, Grain(p.cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* x = p.x + r * p.ldx;
      float* y = p.y + r * p.ldy;
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const int64_t off = grp * width;
        float sum = 0.0f;
        for (int64_t i = 0; i < width; ++i) sum += x[off + i] * x[off + i];
        const float inv = 1.0f / std::sqrt(sum / static_cast<float>(width) + p.eps);
        for (int64_t i = 0; i < width; ++i) y[off + i] = x[off + i] * inv * p.weight[off + i];
      }
    }
  });
}

void CpuBackend::Rope(const RopeParams& p) {
  if (Recorded([=, this] { Rope(p); })) return;
  const int64_t half = p.rotary_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t j = 0; j < half; ++j) {
    inv_freq[j] = std::pow(p.theta, -2.0 * static_cast<double>(j) / p.rotary_dim);
  }
  pool_.ParallelFor(p.rows, Grain(p.heads * p.rotary_dim), [&](int64_t b, int64_t e) {
    std::vector<float> cs(half), sn(half);
    for (int64_t r = b; r < e; ++r) {
      for (int64_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(p.positions[r]) * inv_freq[j];
        cs[j] = static_cast<float>(std::cos(angle));
        sn[j] = static_cast<float>(std::sin(angle));
      }
      for (int64_t h = 0; h < p.heads; ++h) {
        float* x = p.x + r * p.ld + h * p.head_dim;
        for (int64_t j = 0; j < half; ++j) {
          const float x0 = x[j];
          const float x1 = x[j + half];
          x[j] = x0 * cs[j] - x1 * sn[j];
          x[j + half] = x1 * cs[j] + x0 * sn[j];
        }
      }
    }
  });
}

void CpuBackend::SiluMul(const float* gu, int64_t rows, int64_t inter, float* out) {
  if (Recorded([=, this] { SiluMul(gu, rows, inter, out); })) return;
  pool_.ParallelFor(rows, Grain(inter), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* g = gu + r * 2 * inter;
      const float* u = g + inter;
      float* o = out + r * inter;
      for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
}

void CpuBackend::SigmoidMul(float* x, int64_t ldx, const float* g, int64_t ldg, int64_t rows,
                            int64_t cols) {
  if (Recorded([=, this] { SigmoidMul(x, ldx, g, ldg, rows, cols); })) return;
  pool_.ParallelFor(rows, Grain(cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        x[r * ldx + i] *= 1.0f / (1.0f + std::exp(-g[r * ldg + i]));
      }
    }
  });
}

void CpuBackend::Add(float* y, const float* x, int64_t n) {
  if (Recorded([=, this] { Add(y, x, n); })) return;
  pool_.ParallelFor(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  });
}

void CpuBackend::LinearAttention(const LinearAttentionParams& p) {
  if (Recorded([=, this] { LinearAttention(p); })) return;
  pool_.ParallelFor(p.heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t h = b; h < e; ++h) cpu::LinearAttentionHead(p, h);
  });
}

void CpuBackend::LinearAttentionDecode(const LinearDecodeParams& p) {
  if (Recorded([=, this] { LinearAttentionDecode(p); })) return;
  pool_.ParallelFor(p.batch * p.heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) cpu::LinearDecodeHead(p, i / p.heads, i % p.heads);
  });
}

// Up to this many new query rows, softmax attention reads the cache with direct dot products
// (cpu::SoftmaxAttentionQuery); more rows amortise GEMM packing (cpu::SoftmaxAttentionBlock).
constexpr int64_t kDirectQueryRows = 4;

void CpuBackend::SoftmaxAttention(const SoftmaxAttentionParams& p) {
  if (Recorded([=, this] { SoftmaxAttention(p); })) return;
  pool_.ParallelFor(p.kv_heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) cpu::StoreKv(p, g);
  });
  if (p.tokens <= kDirectQueryRows) {  // decode
    pool_.ParallelFor(p.kv_heads * p.tokens, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) cpu::SoftmaxAttentionQuery(p, i % p.kv_heads, i / p.kv_heads);
    });
    return;
  }
  constexpr int64_t kQueryBlock = 64;
  const int64_t blocks = (p.tokens + kQueryBlock - 1) / kQueryBlock;
  // Later query blocks see more keys; interleave so each thread gets a fair share.
  pool_.ParallelFor(p.kv_heads * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t g = i % p.kv_heads;
      const int64_t blk = i / p.kv_heads;
      const int64_t mirrored = (blk % 2 == 0) ? blk / 2 : blocks - 1 - blk / 2;
      cpu::SoftmaxAttentionBlock(p, g, mirrored * kQueryBlock,
                                 std::min(p.tokens, (mirrored + 1) * kQueryBlock));
    }
  });
}

void CpuBackend::SoftmaxAttentionDecode(const SoftmaxDecodeParams& p) {
  if (Recorded([=, this] { SoftmaxAttentionDecode(p); })) return;
  // Sequence b is SoftmaxAttention of its one row; the store and the query of a (b, g) pair
  // touch only that pair's cache head.
  auto one = [&p](int64_t b) {
    const KvCacheRef& s = p.seqs[b];
    const int64_t row = b * p.ld;
    return SoftmaxAttentionParams{
        p.q + row, p.k + row,  p.v + row,  p.ld,   p.out + b * p.heads * p.head_dim,
        s.k_cache, s.v_cache,  s.capacity, s.past, 1,
        p.heads,   p.kv_heads, p.head_dim, p.scale};
  };
  pool_.ParallelFor(p.batch * p.kv_heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const SoftmaxAttentionParams sp = one(i / p.kv_heads);
      cpu::StoreKv(sp, i % p.kv_heads);
      cpu::SoftmaxAttentionQuery(sp, i % p.kv_heads, 0);
    }
  });
}

void CpuBackend::MoeRoute(const MoeRouteParams& p) {
  if (Recorded([=, this] { MoeRoute(p); })) return;
  pool_.ParallelFor(p.tokens, 16, [&](int64_t b, int64_t e) { cpu::MoeRouteRows(p, b, e); });
}

void CpuBackend::MoeExperts(const MoeExpertsParams& p) {
  if (Recorded([=, this] { MoeExperts(p); })) return;
  const int64_t slots = p.tokens * p.top_k;
  const int64_t num_experts = static_cast<int64_t>(p.gate_up->size());
  std::vector<std::vector<int64_t>> rows_of(num_experts);
  for (int64_t s = 0; s < slots; ++s) rows_of[p.expert_ids[s]].push_back(s);
  std::vector<int64_t> active;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (!rows_of[e].empty()) active.push_back(e);
  }
  // Largest groups first, so blocks of the parallel loop carry similar work.
  std::stable_sort(active.begin(), active.end(),
                   [&](int64_t a, int64_t b) { return rows_of[a].size() > rows_of[b].size(); });
  std::vector<float> slot_out(slots * p.hidden);
  const int threads = pool_.num_threads();
  pool_.ParallelFor(threads, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> x, gu, act;
    for (int64_t t = tb; t < te; ++t) {
      for (size_t i = static_cast<size_t>(t); i < active.size(); i += threads) {
        const int64_t e = active[i];
        const auto& rows = rows_of[e];
        const int64_t n = static_cast<int64_t>(rows.size());
        const Weight& w_gu = (*p.gate_up)[e];
        const Weight& w_down = (*p.down)[e];
        const int64_t inter = w_gu.rows / 2;
        x.resize(n * p.hidden);
        gu.resize(n * w_gu.rows);
        act.resize(n * inter);
        for (int64_t r = 0; r < n; ++r) {
          std::memcpy(x.data() + r * p.hidden, p.x + (rows[r] / p.top_k) * p.hidden,
                      p.hidden * sizeof(float));
        }
        cpu::GemmColumns({x.data(), n, p.hidden, &w_gu, gu.data(), w_gu.rows, false}, 0, w_gu.rows);
        for (int64_t r = 0; r < n; ++r) {
          const float* g = gu.data() + r * 2 * inter;
          for (int64_t j = 0; j < inter; ++j) {
            act[r * inter + j] = g[j] / (1.0f + std::exp(-g[j])) * g[inter + j];
          }
        }
        std::vector<float> y(n * p.hidden);
        cpu::GemmColumns({act.data(), n, inter, &w_down, y.data(), p.hidden, false}, 0, p.hidden);
        for (int64_t r = 0; r < n; ++r) {
          const float w = p.weights[rows[r]];
          float* dst = slot_out.data() + rows[r] * p.hidden;
          for (int64_t j = 0; j < p.hidden; ++j) dst[j] = w * y[r * p.hidden + j];
        }
      }
    }
  });
  pool_.ParallelFor(p.tokens, Grain(p.hidden * p.top_k), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* dst = p.y + t * p.hidden;
      for (int64_t k = 0; k < p.top_k; ++k) {
        const float* src = slot_out.data() + (t * p.top_k + k) * p.hidden;
        for (int64_t j = 0; j < p.hidden; ++j) dst[j] += src[j];
      }
    }
  });
}

void CpuBackend::Sample(const float* logits, int64_t rows, int64_t vocab,
                        const SamplingParams* params, int32_t* ids) {
  if (RefusedInCapture("Sample")) return;
  pool_.ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) ids[r] = cpu::SampleRow(logits + r * vocab, vocab, params[r]);
  });
}

}  // namespace ringserve::kernels
