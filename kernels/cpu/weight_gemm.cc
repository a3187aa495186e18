#include "kernels/cpu/weight_gemm.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bf16.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ringserve::kernels::cpu {
namespace {

constexpr int kTileRows = 4;  // rows of x per register tile
constexpr int kTileCols = 4;  // weight rows per register tile
// How far ahead of its loads a tile prefetches each weight row, in bf16 elements (512 bytes).
// One thread streams the weights 10-15% faster with it (decode at batch 1, docs/performance.md).
constexpr int64_t kPrefetchElems = 256;

// sum over [begin, end) of x[i] * w[i], w bf16.
float TailDot(const float* x, const uint16_t* w, int64_t begin, int64_t end) {
  float s = 0.0f;
  for (int64_t i = begin; i < end; ++i) s += x[i] * base::Bf16ToFloat(w[i]);
  return s;
}

#if defined(__x86_64__)

// GCC 12's AVX-512 headers trip its own uninitialised-use warnings (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512 {
#define RINGSERVE_ISA_TARGET __attribute__((target("avx512f")))
struct V {
  static constexpr int kLanes = 16;
  using F = __m512;
  RINGSERVE_ISA_TARGET static F Zero() { return _mm512_setzero_ps(); }
  RINGSERVE_ISA_TARGET static F Load(const float* p) { return _mm512_loadu_ps(p); }
  RINGSERVE_ISA_TARGET static void Widen(const uint16_t* w, F* even, F* odd) {
    const __m512i v = _mm512_loadu_si512(w);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(-65536)));
  }
  RINGSERVE_ISA_TARGET static F Fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  RINGSERVE_ISA_TARGET static float Sum(F a) { return _mm512_reduce_add_ps(a); }
};
#include "kernels/cpu/bf16_tile.inc"
#undef RINGSERVE_ISA_TARGET
}  // namespace avx512
#pragma GCC diagnostic pop

namespace avx2 {
#define RINGSERVE_ISA_TARGET __attribute__((target("avx2,fma")))
struct V {
  static constexpr int kLanes = 8;
  using F = __m256;
  RINGSERVE_ISA_TARGET static F Zero() { return _mm256_setzero_ps(); }
  RINGSERVE_ISA_TARGET static F Load(const float* p) { return _mm256_loadu_ps(p); }
  RINGSERVE_ISA_TARGET static void Widen(const uint16_t* w, F* even, F* odd) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536)));
  }
  RINGSERVE_ISA_TARGET static F Fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  RINGSERVE_ISA_TARGET static float Sum(F a) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
};
#include "kernels/cpu/bf16_tile.inc"
#undef RINGSERVE_ISA_TARGET
}  // namespace avx2

#endif  // __x86_64__

Isa DetectIsa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

std::atomic<Isa>& CurrentIsa() {
  static std::atomic<Isa> isa{BestIsa()};
  return isa;
}

// Rows of x (m rows at stride ldx, k columns) with each whole chunk of `chunk` elements reordered
// to its even elements, then its odd ones; the partial chunk at the end is left out.
void PermuteRows(const GemmParams& p, int64_t chunk, std::vector<float>* out) {
  const int64_t k = p.w->cols;
  const int64_t kp = k / chunk * chunk;
  out->resize(static_cast<size_t>(p.m * kp));
  for (int64_t r = 0; r < p.m; ++r) {
    const float* x = p.x + r * p.ldx;
    float* o = out->data() + r * kp;
    for (int64_t c = 0; c < kp; c += chunk) {
      for (int64_t j = 0; j < chunk / 2; ++j) {
        o[c + j] = x[c + 2 * j];
        o[c + chunk / 2 + j] = x[c + 2 * j + 1];
      }
    }
  }
}

// y columns [n_begin, n_end) = x * panel^T, the panel holding those weight rows in fp32.
void SgemmPanel(const GemmParams& p, const float* panel, int64_t n_begin, int64_t n_end) {
  const int64_t k = p.w->cols;
  const int64_t nb = n_end - n_begin;
  const float beta = p.accumulate ? 1.0f : 0.0f;
  if (p.m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, nb, k, 1.0f, panel, k, p.x, 1, beta, p.y + n_begin, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, nb, k, 1.0f, p.x, p.ldx, panel, k, beta,
              p.y + n_begin, p.ldy);
}

// fp32 weights: sgemm on each contiguous run of the columns.
void GemmF32(const GemmParams& p, int64_t n_begin, int64_t n_end) {
  const int64_t split = p.w->tail != nullptr ? p.w->split_row : p.w->rows;
  for (const auto& [b, e] :
       {std::pair{n_begin, std::min(n_end, split)}, std::pair{std::max(n_begin, split), n_end}}) {
    if (b < e) SgemmPanel(p, static_cast<const float*>(p.w->Row(b)), b, e);
  }
}

// bf16 weights: panels widened into a per-thread buffer, then sgemm. Large panels amortise the
// repacking of x that each sgemm call does; for a few rows, small ones stay in cache.
void GemmBf16Panels(const GemmParams& p, int64_t n_begin, int64_t n_end) {
  const int64_t k = p.w->cols;
  const int64_t panel_bytes = p.m > kStreamedRows ? (int64_t{2} << 20) : (int64_t{64} << 10);
  const int64_t panel_rows = std::max<int64_t>(16, panel_bytes / (4 * k));
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(std::min(panel_rows, n_end - n_begin) * k));
  for (int64_t n0 = n_begin; n0 < n_end; n0 += panel_rows) {
    const int64_t n1 = std::min(n_end, n0 + panel_rows);
    for (int64_t n = n0; n < n1; ++n) {
      const uint16_t* w = static_cast<const uint16_t*>(p.w->Row(n));
      float* dst = panel.data() + (n - n0) * k;
      for (int64_t i = 0; i < k; ++i) dst[i] = base::Bf16ToFloat(w[i]);
    }
    SgemmPanel(p, panel.data(), n0, n1);
  }
}

void GemmBf16Streamed(const GemmParams& p, int64_t n_begin, int64_t n_end, Isa isa) {
#if defined(__x86_64__)
  thread_local std::vector<float> xp;
  const int64_t chunk = isa == Isa::kAvx512 ? 2 * avx512::V::kLanes : 2 * avx2::V::kLanes;
  PermuteRows(p, chunk, &xp);
  const int64_t ldxp = p.w->cols / chunk * chunk;
  if (isa == Isa::kAvx512) {
    avx512::Streamed(p, n_begin, n_end, xp.data(), ldxp);
  } else {
    avx2::Streamed(p, n_begin, n_end, xp.data(), ldxp);
  }
#else
  GemmBf16Panels(p, n_begin, n_end);
#endif
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

Isa BestIsa() {
  static const Isa best = DetectIsa();
  return best;
}

Isa ActiveIsa() { return CurrentIsa().load(std::memory_order_relaxed); }

absl::Status SetIsa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(BestIsa())) {
    return absl::InvalidArgumentError(
        absl::StrCat("this CPU runs ", IsaName(BestIsa()), " at most, not ", IsaName(isa)));
  }
  CurrentIsa().store(isa, std::memory_order_relaxed);
  return absl::OkStatus();
}

void GemmColumns(const GemmParams& p, int64_t n_begin, int64_t n_end) {
  if (n_end <= n_begin || p.m <= 0) return;
  if (p.w->dtype == base::DType::kF32) {
    GemmF32(p, n_begin, n_end);
    return;
  }
  const Isa isa = ActiveIsa();
  if (p.m <= kStreamedRows && isa != Isa::kPortable) {
    GemmBf16Streamed(p, n_begin, n_end, isa);
  } else {
    GemmBf16Panels(p, n_begin, n_end);
  }
}

}  // namespace ringserve::kernels::cpu
