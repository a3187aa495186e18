#pragma once

// Row-wise and elementwise kernels of the CUDA backend. Each op: a params struct (or the Backend's
// own, whose pointers are device memory here), CanImplement(params) and Launch(params, stream);
// the CPU reference is the matching CpuBackend method.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

// out[i, :] = table[ids[i], :], widened from bf16.
struct EmbedParams {
  const uint16_t* table;  // [vocab, cols], bf16
  int64_t cols;
  const int32_t* ids;  // [n], device-readable, already validated against vocab
  int64_t n;
  float* out;  // [n, cols], fp32
};
bool CanImplement(const EmbedParams& p);
cudaError_t Launch(const EmbedParams& p, cudaStream_t stream);

// Grouped RMSNorm (CpuBackend::RmsNorm): one warp per group up to 1024 channels, else one block.
bool CanImplement(const RmsNormParams& p);
cudaError_t Launch(const RmsNormParams& p, cudaStream_t stream);

// Partial NeoX RoPE in place (CpuBackend::Rope); angles in fp64 like the CPU.
bool CanImplement(const RopeParams& p);
cudaError_t Launch(const RopeParams& p, cudaStream_t stream);

// out[r, i] = silu(gu[r, i]) * gu[r, inter + i].
struct SiluMulParams {
  const float* gu;  // [rows, 2 * inter], fp32
  int64_t rows;
  int64_t inter;
  float* out;  // [rows, inter], fp32
};
bool CanImplement(const SiluMulParams& p);
cudaError_t Launch(const SiluMulParams& p, cudaStream_t stream);

// x[r, i] *= sigmoid(g[r, i]).
struct SigmoidMulParams {
  float* x;  // [rows, cols] at row stride ldx
  int64_t ldx;
  const float* g;  // [rows, cols] at row stride ldg
  int64_t ldg;
  int64_t rows;
  int64_t cols;
};
bool CanImplement(const SigmoidMulParams& p);
cudaError_t Launch(const SigmoidMulParams& p, cudaStream_t stream);

// y[i] += x[i].
struct AddParams {
  float* y;
  const float* x;
  int64_t n;
};
bool CanImplement(const AddParams& p);
cudaError_t Launch(const AddParams& p, cudaStream_t stream);

// x[i] = value.
struct FillParams {
  float* x;
  float value;
  int64_t n;
};
bool CanImplement(const FillParams& p);
cudaError_t Launch(const FillParams& p, cudaStream_t stream);

// Converts fp32 rows to bf16 GEMM operands: hi = bf16(x) and, when `lo` is set, lo = bf16(x - hi).
// Row r of the output reads input row gather[r] / gather_div (or r when gather is null).
struct ToBf16Params {
  const float* x;  // [*, cols] at row stride ldx
  int64_t ldx;
  int64_t rows;
  int64_t cols;
  uint16_t* hi;                     // [rows, cols], bf16, row stride cols
  uint16_t* lo;                     // optional, same shape
  const int32_t* gather = nullptr;  // [rows], device
  int64_t gather_div = 1;
};
bool CanImplement(const ToBf16Params& p);
cudaError_t Launch(const ToBf16Params& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
