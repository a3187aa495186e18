#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bf16.h"
#include "common/base/status_macros.h"
#include "kernels/cpu/cpu_ops.h"

namespace ringserve::kernels {
namespace {

void FreeHost(void* p) { std::free(p); }

// Splits rows so each block carries at least ~32K elements of work.
int64_t Grain(int64_t per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_row));
}

}  // namespace

CpuBackend::CpuBackend(int threads) : pool_(threads) {
  // Parallelism comes from our pool; each BLAS call runs on the thread that makes it.
  openblas_set_num_threads(1);
}

absl::StatusOr<Buffer> CpuBackend::Allocate(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  return Buffer(p, &FreeHost);
}

void CpuBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::Fill(float* x, float value, int64_t n) { std::fill_n(x, n, value); }

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
  ASSIGN_OR_RETURN(float* data, Widen(tensor));
  return Weight{data, tensor.shape[0], tensor.shape[1], base::DType::kF32};
}

absl::StatusOr<const float*> CpuBackend::UploadVector(const base::TensorView& tensor) {
  return Widen(tensor);
}

void CpuBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  const float* data = static_cast<const float*>(table.data);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * table.cols, data + static_cast<int64_t>(ids[i]) * table.cols,
                table.cols * sizeof(float));
  }
}

void CpuBackend::Gemm(const GemmParams& p) {
  const int64_t n = p.w->rows;
  // Column blocks of whole cache lines; enough blocks for every thread.
  const int64_t grain = std::max<int64_t>(16, n / (4 * pool_.num_threads()) / 16 * 16);
  pool_.ParallelFor((n + grain - 1) / grain, 1, [&](int64_t b, int64_t e) {
    cpu::GemmColumns(p, b * grain, std::min(n, e * grain));
  });
}

void CpuBackend::RmsNorm(const RmsNormParams& p) {
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
  pool_.ParallelFor(rows, Grain(cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        x[r * ldx + i] *= 1.0f / (1.0f + std::exp(-g[r * ldg + i]));
      }
    }
  });
}

void CpuBackend::Add(float* y, const float* x, int64_t n) {
  pool_.ParallelFor(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  });
}

void CpuBackend::LinearAttention(const LinearAttentionParams& p) {
  pool_.ParallelFor(p.heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t h = b; h < e; ++h) cpu::LinearAttentionHead(p, h);
  });
}

void CpuBackend::LinearAttentionDecode(const LinearDecodeParams& p) {
  pool_.ParallelFor(p.batch * p.heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) cpu::LinearDecodeHead(p, i / p.heads, i % p.heads);
  });
}

// Up to this many new query rows, softmax attention reads the cache with direct dot products
// (cpu::SoftmaxAttentionQuery); more rows amortise GEMM packing (cpu::SoftmaxAttentionBlock).
constexpr int64_t kDirectQueryRows = 4;

void CpuBackend::SoftmaxAttention(const SoftmaxAttentionParams& p) {
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

void CpuBackend::MoeRoute(const MoeRouteParams& p) {
  pool_.ParallelFor(p.tokens, 16, [&](int64_t b, int64_t e) { cpu::MoeRouteRows(p, b, e); });
}

void CpuBackend::MoeExperts(const MoeExpertsParams& p) {
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
  pool_.ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) ids[r] = cpu::SampleRow(logits + r * vocab, vocab, params[r]);
  });
}

}  // namespace ringserve::kernels
