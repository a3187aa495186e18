#pragma once

// Device helpers shared by the CUDA kernels: bf16 bit conversions that round exactly like
// common/base/bf16.h (so the GPU writes the same KV-cache bits as the CPU), and warp reductions.

#include <cuda_runtime.h>

#include <cstdint>

namespace ringserve::kernels::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float Bf16ToFloat(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// Round to nearest even; NaN stays NaN (as base::FloatToBf16).
__device__ __forceinline__ uint16_t FloatToBf16(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// x = hi + lo with hi = bf16(x) and lo = bf16(x - hi): two bf16 tensor-core operands that carry
// ~16 bits of x's mantissa.
__device__ __forceinline__ void SplitBf16(float x, uint16_t* hi, uint16_t* lo) {
  *hi = FloatToBf16(x);
  *lo = FloatToBf16(x - Bf16ToFloat(*hi));
}

// Unpacks 8 bf16 values held in a uint4.
__device__ __forceinline__ void Unpack8(const uint4& u, float* out) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

}  // namespace ringserve::kernels::cuda
