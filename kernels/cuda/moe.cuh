#pragma once

// MoE routing and the token permutation around the expert GEMMs.
// References: cpu::MoeRouteRows and CpuBackend::MoeExperts.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

// Sigmoid scores, group-limited top-k with the CPU's tie rules (a higher score wins, then the
// lower index), weights p / (sum p + 1e-20) * scale. One warp per token. Device pointers.
bool CanImplement(const MoeRouteParams& p);
cudaError_t Launch(const MoeRouteParams& p, cudaStream_t stream);

// Groups the T x K routing slots by expert: counts, exclusive offsets, the list of experts with
// tokens (ascending), and the permutation (perm[pos] = slot, pos_of_slot[slot] = pos). The order
// of slots within one expert is arbitrary; every row of an expert GEMM is computed the same way
// wherever it sits, so results do not depend on it.
struct MoePermuteParams {
  const int32_t* expert_ids;  // [slots]
  int64_t slots;
  int64_t experts;
  int32_t* counts;       // [E]
  int32_t* offsets;      // [E]
  int32_t* cursor;       // [E] scratch
  int32_t* active;       // [E]
  int32_t* num_active;   // [1]
  int32_t* perm;         // [slots]
  int32_t* pos_of_slot;  // [slots]
};
bool CanImplement(const MoePermuteParams& p);
cudaError_t Launch(const MoePermuteParams& p, cudaStream_t stream);

// y[t] += sum_k weights[t, k] * expert_out[pos_of_slot[t * K + k]], summed in k order.
struct MoeCombineParams {
  const float* expert_out;  // [slots, hidden] by permuted position
  const int32_t* pos_of_slot;
  const float* weights;  // [T, K]
  int64_t tokens;
  int64_t top_k;
  int64_t hidden;
  float* y;  // [T, hidden]
};
bool CanImplement(const MoeCombineParams& p);
cudaError_t Launch(const MoeCombineParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
