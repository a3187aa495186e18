#include <algorithm>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

namespace ringserve::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * kWarp;
constexpr int kWeightRowsPerWarp = 4;
constexpr int kRows = static_cast<int>(kSkinnyRows);

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Each lane of the warp takes 8 consecutive k of every row per step; on return every lane holds
// the full dot products acc[r][j] = x_r . w_j for r < rows_valid.
template <int R, int NW>
__device__ __forceinline__ void WarpDots(const float* const (&xr)[R], int rows_valid,
                                         const uint16_t* const (&wr)[NW], int64_t k,
                                         float (&acc)[R][NW]) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int j = 0; j < NW; ++j) acc[r][j] = 0.0f;
  }
#pragma unroll 2
  for (int64_t c = lane * 8; c < k; c += kWarp * 8) {
    float wf[NW][8];
#pragma unroll
    for (int j = 0; j < NW; ++j) Unpack8(__ldg(reinterpret_cast<const uint4*>(wr[j] + c)), wf[j]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < rows_valid) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(xr[r] + c));
        const float4 b = __ldg(reinterpret_cast<const float4*>(xr[r] + c + 4));
        const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int j = 0; j < NW; ++j) {
#pragma unroll
          for (int q = 0; q < 8; ++q) acc[r][j] = fmaf(xv[q], wf[j][q], acc[r][j]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int j = 0; j < NW; ++j) acc[r][j] = WarpSum(acc[r][j]);
  }
}

template <int R>
__global__ void __launch_bounds__(kThreads) SkinnyGemmKernel(SkinnyGemmParams p) {
  constexpr int NW = kWeightRowsPerWarp;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * NW;
  if (n0 >= p.n) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * R;
  const int rows_valid = static_cast<int>(min(static_cast<int64_t>(R), p.m - r0));
  const float* xr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) xr[r] = p.x + (r0 + (r < rows_valid ? r : 0)) * p.ldx;
  const uint16_t* wr[NW];
#pragma unroll
  for (int j = 0; j < NW; ++j) wr[j] = p.w + min(n0 + j, p.n - 1) * p.k;
  float acc[R][NW];
  WarpDots<R, NW>(xr, rows_valid, wr, p.k, acc);
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int j = 0; j < NW; ++j) {
      if (lane == r * NW + j && r < rows_valid && n0 + j < p.n) {
        float* dst = p.y + (r0 + r) * p.ldy + n0 + j;
        *dst = p.accumulate ? *dst + acc[r][j] : acc[r][j];
      }
    }
  }
}

template <bool kSwiglu>
__global__ void __launch_bounds__(kThreads) MoeSkinnyKernel(MoeSkinnyParams p) {
  constexpr int NW = kWeightRowsPerWarp;
  constexpr int kCols = kSwiglu ? NW / 2 : NW;  // output columns per warp
  if (static_cast<int>(blockIdx.y) >= *p.num_active) return;
  const int e = p.active[blockIdx.y];
  const int count = p.counts[e];
  const int off = p.offsets[e];
  const uint16_t* w = p.w[e];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t j0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * kCols;
  if (j0 >= p.n) return;
  const uint16_t* wr[NW];
#pragma unroll
  for (int q = 0; q < kCols; ++q) {
    const int64_t j = min(j0 + q, p.n - 1);
    wr[q] = w + j * p.k;
    if constexpr (kSwiglu) wr[kCols + q] = w + (p.n + j) * p.k;
  }
  for (int c0 = 0; c0 < count; c0 += kRows) {
    const int rows_valid = min(kRows, count - c0);
    const float* xr[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t pos = off + c0 + min(r, rows_valid - 1);
      const int64_t row = p.x_rows != nullptr ? p.x_rows[pos] / p.x_div : pos;
      xr[r] = p.x + row * p.ldx;
    }
    float acc[kRows][NW];
    WarpDots<kRows, NW>(xr, rows_valid, wr, p.k, acc);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int q = 0; q < kCols; ++q) {
        if (lane == r * kCols + q && r < rows_valid && j0 + q < p.n) {
          float v = acc[r][q];
          if constexpr (kSwiglu) v = v / (1.0f + expf(-v)) * acc[r][kCols + q];
          p.y[(off + c0 + r) * p.ldy + j0 + q] = v;
        }
      }
    }
  }
}

}  // namespace

bool CanImplement(const SkinnyGemmParams& p) {
  return p.m > 0 && p.n > 0 && p.k > 0 && p.k % 8 == 0 && p.ldx % 4 == 0 && p.ldx >= p.k &&
         p.ldy >= p.n && Aligned16(p.x) && Aligned16(p.w) && p.y != nullptr &&
         CeilDiv(p.m, kRows) <= 65535;
}

cudaError_t Launch(const SkinnyGemmParams& p, cudaStream_t stream) {
  const dim3 block(kThreads);
  const unsigned gx = static_cast<unsigned>(
      CeilDiv(p.n, static_cast<int64_t>(kWarpsPerBlock) * kWeightRowsPerWarp));
  if (p.m == 1) {
    SkinnyGemmKernel<1><<<dim3(gx, 1), block, 0, stream>>>(p);
  } else if (p.m == 2) {
    SkinnyGemmKernel<2><<<dim3(gx, 1), block, 0, stream>>>(p);
  } else if (p.m <= 4) {
    SkinnyGemmKernel<4><<<dim3(gx, 1), block, 0, stream>>>(p);
  } else {
    SkinnyGemmKernel<kRows>
        <<<dim3(gx, static_cast<unsigned>(CeilDiv(p.m, kRows))), block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

bool CanImplement(const MoeSkinnyParams& p) {
  return p.n > 0 && p.k > 0 && p.k % 8 == 0 && p.ldx % 4 == 0 && p.ldx >= p.k && Aligned16(p.x) &&
         p.x_div > 0 && p.w != nullptr && p.max_active >= 0 && p.max_active <= 65535 &&
         p.ldy >= p.n && p.y != nullptr;
}

cudaError_t Launch(const MoeSkinnyParams& p, cudaStream_t stream) {
  if (p.max_active == 0) return cudaSuccess;
  const dim3 block(kThreads);
  const int64_t cols_per_block = static_cast<int64_t>(kWarpsPerBlock) *
                                 (p.swiglu ? kWeightRowsPerWarp / 2 : kWeightRowsPerWarp);
  const dim3 grid(static_cast<unsigned>(CeilDiv(p.n, cols_per_block)),
                  static_cast<unsigned>(p.max_active));
  if (p.swiglu) {
    MoeSkinnyKernel<true><<<grid, block, 0, stream>>>(p);
  } else {
    MoeSkinnyKernel<false><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace ringserve::kernels::cuda
