#include <algorithm>
#include <climits>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/moe.cuh"

namespace ringserve::kernels::cuda {
namespace {

constexpr int kRouteWarps = 4;
constexpr int kRouteThreads = kRouteWarps * kWarp;
constexpr int kMaxExperts = 1024;

__global__ void __launch_bounds__(kRouteThreads) MoeRouteKernel(MoeRouteParams p) {
  extern __shared__ float4 smem_f4[];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t >= p.tokens) return;
  const int e_count = static_cast<int>(p.experts);
  float* prob = reinterpret_cast<float*>(smem_f4) + warp * 2 * e_count;
  float* score = prob + e_count;
  unsigned char* taken = reinterpret_cast<unsigned char*>(reinterpret_cast<float*>(smem_f4) +
                                                          kRouteWarps * 2 * e_count) +
                         warp * e_count;
  for (int i = lane; i < e_count; i += kWarp) {
    const float pr = 1.0f / (1.0f + expf(-p.logits[t * e_count + i]));
    prob[i] = pr;
    score[i] = pr + (p.bias != nullptr ? p.bias[i] : 0.0f);
    taken[i] = 0;
  }
  __syncwarp();

  // Group scores (sum of the two best), then the top_groups best groups, ties to the lower
  // group, as the CPU's stable sort.
  const int groups = static_cast<int>(p.groups);
  const int per_group = e_count / groups;
  float gs = -INFINITY;
  if (lane < groups) {
    float best = -INFINITY;
    float second = -INFINITY;
    for (int i = lane * per_group; i < (lane + 1) * per_group; ++i) {
      if (score[i] > best) {
        second = best;
        best = score[i];
      } else if (score[i] > second) {
        second = score[i];
      }
    }
    gs = per_group >= 2 ? best + second : best;
  }
  int rank = 0;
  for (int g2 = 0; g2 < groups; ++g2) {
    const float other = __shfl_sync(kFullMask, gs, g2);
    if (other > gs || (other == gs && g2 < lane)) ++rank;
  }
  const unsigned allowed = __ballot_sync(kFullMask, lane < groups && rank < p.top_groups);

  float sum = 0.0f;
  int32_t* ids = p.expert_ids + t * p.top_k;
  for (int64_t k = 0; k < p.top_k; ++k) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int i = lane; i < e_count; i += kWarp) {
      if (taken[i] == 0 && ((allowed >> (i / per_group)) & 1u) != 0) {
        if (bi == INT_MAX || score[i] > bv) {
          bv = score[i];
          bi = i;
        }
      }
    }
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, o);
      const int oi = __shfl_xor_sync(kFullMask, bi, o);
      if (oi != INT_MAX && (bi == INT_MAX || ov > bv || (ov == bv && oi < bi))) {
        bv = ov;
        bi = oi;
      }
    }
    if (bi == INT_MAX) bi = 0;  // unreachable: CanImplement guarantees enough candidates
    if (lane == 0) {
      taken[bi] = 1;
      ids[k] = bi;
      sum += prob[bi];
    }
    __syncwarp();
  }
  if (lane == 0) {
    for (int64_t k = 0; k < p.top_k; ++k) {
      p.weights[t * p.top_k + k] = prob[ids[k]] / (sum + 1e-20f) * p.routed_scaling;
    }
  }
}

__global__ void MoeCountKernel(MoePermuteParams p) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < p.slots;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    atomicAdd(&p.counts[p.expert_ids[s]], 1);
  }
}

// One block of kMaxExperts threads: exclusive offsets and the ascending list of active experts.
__global__ void __launch_bounds__(kMaxExperts) MoeScanKernel(MoePermuteParams p) {
  __shared__ int s_count[kMaxExperts];
  __shared__ int s_flag[kMaxExperts];
  const int e = threadIdx.x;
  const int c = e < p.experts ? p.counts[e] : 0;
  s_count[e] = c;
  s_flag[e] = c > 0 ? 1 : 0;
  __syncthreads();
  for (int off = 1; off < kMaxExperts; off <<= 1) {
    const int a = e >= off ? s_count[e - off] : 0;
    const int b = e >= off ? s_flag[e - off] : 0;
    __syncthreads();
    s_count[e] += a;
    s_flag[e] += b;
    __syncthreads();
  }
  if (e < p.experts) {
    const int offset = s_count[e] - c;
    p.offsets[e] = offset;
    p.cursor[e] = offset;
    if (c > 0) p.active[s_flag[e] - 1] = e;
  }
  if (e == kMaxExperts - 1) *p.num_active = s_flag[e];
}

__global__ void MoePlaceKernel(MoePermuteParams p) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < p.slots;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int pos = atomicAdd(&p.cursor[p.expert_ids[s]], 1);
    p.perm[pos] = static_cast<int32_t>(s);
    p.pos_of_slot[s] = pos;
  }
}

__global__ void MoeCombineKernel(MoeCombineParams p) {
  const int64_t n = p.tokens * p.hidden;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / p.hidden;
    const int64_t j = i % p.hidden;
    float acc = p.y[i];
    for (int64_t k = 0; k < p.top_k; ++k) {
      const int64_t slot = t * p.top_k + k;
      // The product is rounded before the add, as the CPU's slot_out = w * y.
      acc = __fadd_rn(acc,
                      __fmul_rn(p.weights[slot], p.expert_out[p.pos_of_slot[slot] * p.hidden + j]));
    }
    p.y[i] = acc;
  }
}

unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(n, 256), 1, 1 << 20));
}

}  // namespace

bool CanImplement(const MoeRouteParams& p) {
  if (p.experts <= 0 || p.experts > kMaxExperts || p.groups <= 0 || p.groups > kWarp ||
      p.experts % p.groups != 0 || p.top_groups <= 0 || p.top_groups > p.groups || p.top_k <= 0) {
    return false;
  }
  return p.top_k <= p.top_groups * (p.experts / p.groups) && p.tokens >= 0 && p.logits != nullptr &&
         p.expert_ids != nullptr && p.weights != nullptr;
}

cudaError_t Launch(const MoeRouteParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return cudaSuccess;
  const size_t smem = static_cast<size_t>(kRouteWarps) * p.experts * (2 * sizeof(float) + 1);
  MoeRouteKernel<<<static_cast<unsigned>(CeilDiv(p.tokens, kRouteWarps)), kRouteThreads, smem,
                   stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const MoePermuteParams& p) {
  return p.experts > 0 && p.experts <= kMaxExperts && p.slots >= 0 && p.slots < (1ll << 31) &&
         p.expert_ids != nullptr && p.counts != nullptr && p.offsets != nullptr &&
         p.cursor != nullptr && p.active != nullptr && p.num_active != nullptr &&
         p.perm != nullptr && p.pos_of_slot != nullptr;
}

cudaError_t Launch(const MoePermuteParams& p, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(p.counts, 0, sizeof(int32_t) * p.experts, stream);
  if (e != cudaSuccess) return e;
  if (p.slots > 0) MoeCountKernel<<<GridFor(p.slots), 256, 0, stream>>>(p);
  MoeScanKernel<<<1, kMaxExperts, 0, stream>>>(p);
  if (p.slots > 0) MoePlaceKernel<<<GridFor(p.slots), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const MoeCombineParams& p) {
  return p.tokens >= 0 && p.top_k > 0 && p.hidden > 0 && p.expert_out != nullptr &&
         p.pos_of_slot != nullptr && p.weights != nullptr && p.y != nullptr;
}

cudaError_t Launch(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return cudaSuccess;
  MoeCombineKernel<<<GridFor(p.tokens * p.hidden), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ringserve::kernels::cuda
