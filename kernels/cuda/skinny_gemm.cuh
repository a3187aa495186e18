#pragma once

// GEMMs with few activation rows (decode): fp32 activations times bf16 weights with fp32 FMAs on
// CUDA cores, each weight row streamed once per 8 activation rows. Memory-bound by design; the
// cuBLAS path takes over for larger m (CudaBackend::Gemm).

#include <cuda_runtime.h>

#include <cstdint>

namespace ringserve::kernels::cuda {

// Activation rows handled per pass over the weights.
constexpr int64_t kSkinnyRows = 8;

// y[m, n] (+)= x[m, k] * w[n, k]^T. Reference: cpu::GemmColumns.
struct SkinnyGemmParams {
  const float* x;  // [m, k] at row stride ldx, fp32 (16-byte aligned rows)
  int64_t ldx;
  int64_t m;
  const uint16_t* w;  // [n, k], bf16
  int64_t n;
  int64_t k;  // multiple of 8
  float* y;   // [m, n] at row stride ldy, fp32
  int64_t ldy;
  bool accumulate;
};
bool CanImplement(const SkinnyGemmParams& p);
cudaError_t Launch(const SkinnyGemmParams& p, cudaStream_t stream);

// The expert GEMMs of a MoE layer over slots permuted by expert (see moe.cuh): for every active
// expert e and each of its permuted positions pos in [offsets[e], offsets[e] + counts[e]):
//   swiglu: y[pos, j] = silu(x_pos . w_e[j]) * (x_pos . w_e[n + j])   (w_e is [2n, k])
//   plain:  y[pos, j] = x_pos . w_e[j]                                 (w_e is [n, k])
// where x_pos = x[x_rows[pos] / x_div] (or x[pos] when x_rows is null). Expert counts stay on
// the device: blocks of inactive grid rows exit.
struct MoeSkinnyParams {
  const float* x;  // activation rows at stride ldx, fp32 (16-byte aligned rows)
  int64_t ldx;
  const int32_t* x_rows;  // [slots] or null
  int64_t x_div;
  const uint16_t* const* w;  // [E] device pointers to bf16 expert weights
  int64_t n;
  int64_t k;  // multiple of 8
  bool swiglu;
  const int32_t* counts;      // [E]
  const int32_t* offsets;     // [E]
  const int32_t* active;      // [E] experts with tokens, first *num_active valid
  const int32_t* num_active;  // [1]
  int64_t max_active;         // grid bound: min(E, slots)
  float* y;                   // [slots, n] by permuted position
  int64_t ldy;
};
bool CanImplement(const MoeSkinnyParams& p);
cudaError_t Launch(const MoeSkinnyParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
