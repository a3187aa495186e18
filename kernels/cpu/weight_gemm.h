#pragma once

#include <cstdint>

#include "kernels/backend.h"

// GEMMs against weights in their stored dtype (fp32, or bf16 read from the mapped checkpoint).
// bf16 weights are widened to fp32 (a 16-bit shift, exact) and multiplied in fp32, so a result
// differs from the fp32 GEMM of the widened weight only by the order of the summation.
namespace ringserve::kernels::cpu {

// The instruction sets of the bf16 kernels, narrowest first.
enum class Isa { kPortable, kAvx2, kAvx512 };

const char* IsaName(Isa isa);
// The widest instruction set this CPU runs.
Isa BestIsa();
// The instruction set the kernels use; BestIsa() until SetIsa.
Isa ActiveIsa();
// Makes the kernels use `isa` (tests force the narrower paths); InvalidArgument when this CPU
// cannot run it. Not to be called while kernels run.
absl::Status SetIsa(Isa isa);

// Up to this many rows, bf16 weights are streamed once and widened in registers (decode);
// beyond it, widened panel by panel into a per-thread buffer and multiplied by sgemm (prefill).
inline constexpr int64_t kStreamedRows = 64;

// y[m, n] = x[m, k] * w[n, k]^T (+ y) for the output columns [n_begin, n_end) of an fp32 or
// bf16 weight (stacked weights included). Single-threaded; callers split the columns.
void GemmColumns(const GemmParams& p, int64_t n_begin, int64_t n_end);

}  // namespace ringserve::kernels::cpu
