#include <algorithm>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/linear_attention.cuh"

namespace ringserve::kernels::cuda {
namespace {

constexpr int kC = static_cast<int>(kLinearChunk);
// Threads per state column: each owns a quarter of the column's D_k entries.
constexpr int kParts = 4;
// Row strides in shared memory (floats): q and k rows padded so that threads reading different
// rows at the same column hit different banks.
template <int D>
constexpr int kQkStride = D + 4;
constexpr int kAStride = kC + 4;

template <int D>
constexpr int kThreads = D* kParts;

template <int D>
constexpr size_t ChunkSmemBytes() {
  return sizeof(float) * (2 * kC * kQkStride<D> + kC * D + kC * kAStride + kAStride);
}
template <int D>
constexpr size_t StateSmemBytes() {
  return sizeof(float) * (kC * kQkStride<D> + kC * D + kAStride);
}

// State column `dv` entries held by a thread of part `part`: s[m * 4 + i] is row
// dk = 16 m + 4 part + i, for m < D / 16, so that the four parts of a column read one contiguous
// 64-byte span of a q or k row per float4 step.
template <int D>
__device__ __forceinline__ int StateRow(int m, int part, int i) {
  return 16 * m + 4 * part + i;
}

template <int D>
__device__ __forceinline__ void LoadState(const float* src, int part, int dv, float (&s)[D / 4]) {
#pragma unroll
  for (int m = 0; m < D / 16; ++m) {
#pragma unroll
    for (int i = 0; i < 4; ++i) s[m * 4 + i] = src[StateRow<D>(m, part, i) * D + dv];
  }
}

template <int D>
__device__ __forceinline__ void StoreState(float* dst, int part, int dv, const float (&s)[D / 4]) {
#pragma unroll
  for (int m = 0; m < D / 16; ++m) {
#pragma unroll
    for (int i = 0; i < 4; ++i) dst[StateRow<D>(m, part, i) * D + dv] = s[m * 4 + i];
  }
}

// Copies rows [c0, c0 + len) of head h of q/k/v into shared memory (any of q_s may be null).
template <int D>
__device__ __forceinline__ void LoadChunk(const LinearAttentionParams& p, int64_t h, int64_t c0,
                                          int len, float* q_s, float* k_s, float* v_s) {
  for (int idx = threadIdx.x; idx < len * D; idx += blockDim.x) {
    const int row = idx / D;
    const int col = idx % D;
    const int64_t src = (c0 + row) * p.ld + h * D + col;
    if (q_s != nullptr) q_s[row * kQkStride<D> + col] = p.q[src];
    k_s[row * kQkStride<D> + col] = p.k[src];
    v_s[row * D + col] = p.v[src];
  }
}

// s <- pw[len] s + sum_j k_j (pw[len - 1 - j] v_j[dv]) for the chunk in shared memory.
template <int D>
__device__ __forceinline__ void UpdateState(const float* k_s, const float* v_s, const float* pw,
                                            int len, int part, int dv, float (&s)[D / 4]) {
  const float carry = pw[len];
#pragma unroll
  for (int e = 0; e < D / 4; ++e) s[e] *= carry;
  for (int j = 0; j < len; ++j) {
    const float vd = v_s[j * D + dv] * pw[len - 1 - j];
    const float* krow = k_s + j * kQkStride<D> + 4 * part;
#pragma unroll
    for (int m = 0; m < D / 16; ++m) {
      const float4 k4 = *reinterpret_cast<const float4*>(krow + 16 * m);
      s[m * 4 + 0] = fmaf(k4.x, vd, s[m * 4 + 0]);
      s[m * 4 + 1] = fmaf(k4.y, vd, s[m * 4 + 1]);
      s[m * 4 + 2] = fmaf(k4.z, vd, s[m * 4 + 2]);
      s[m * 4 + 3] = fmaf(k4.w, vd, s[m * 4 + 3]);
    }
  }
}

__device__ __forceinline__ void FillDecay(float g, float* pw) {
  for (int i = threadIdx.x; i <= kC; i += blockDim.x) pw[i] = expf(g * static_cast<float>(i));
}

// Phase C (and the whole prefill when segments == 1): outputs of one (head, segment).
template <int D>
__global__ void __launch_bounds__(kThreads<D>) LinearChunkKernel(LinearPrefillParams pp) {
  const LinearAttentionParams& p = pp.attn;
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  float* q_s = smem;
  float* k_s = q_s + kC * kQkStride<D>;
  float* v_s = k_s + kC * kQkStride<D>;
  float* a_s = v_s + kC * D;
  float* pw = a_s + kC * kAStride;

  const int64_t h = blockIdx.x;
  const int64_t seg = blockIdx.y;
  const int t = threadIdx.x;
  const int part = t % kParts;
  const int dv = t / kParts;
  const int lane = t % kWarp;
  const int warp = t / kWarp;
  const int warps = blockDim.x / kWarp;
  const int64_t begin = seg * pp.segment_tokens;
  const int64_t end = min(p.tokens, begin + pp.segment_tokens);
  float* state_in =
      pp.segments == 1 ? p.state + h * D * D : pp.workspace + (h * pp.segments + seg) * D * D;
  const int64_t out_ld = p.heads * D;

  FillDecay(p.log_decay[h], pw);
  float s[D / 4];
  LoadState<D>(state_in, part, dv, s);

  for (int64_t c0 = begin; c0 < end; c0 += kC) {
    const int len = static_cast<int>(min(static_cast<int64_t>(kC), end - c0));
    LoadChunk<D>(p, h, c0, len, q_s, k_s, v_s);
    __syncthreads();

    // Decay-masked intra-chunk scores A[i][j] = (q_i . k_j) pw[i - j] for j <= i < len: a warp
    // takes 4 rows, each lane the columns lane and lane + 32.
    for (int bi = warp; bi < kC / 4; bi += warps) {
      const int i0 = 4 * bi;
      if (i0 >= len) break;
      const int j1 = lane;
      const int j2 = lane + kWarp;
      const bool need1 = j1 <= i0 + 3 && j1 < len;
      const bool need2 = j2 <= i0 + 3 && j2 < len;
      if (!need1 && !need2) continue;
      float acc[4][2] = {};
      for (int d = 0; d < D; d += 4) {
        const float4 ka = *reinterpret_cast<const float4*>(k_s + j1 * kQkStride<D> + d);
        const float4 kb = *reinterpret_cast<const float4*>(k_s + j2 * kQkStride<D> + d);
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          const float4 qa = *reinterpret_cast<const float4*>(q_s + (i0 + a) * kQkStride<D> + d);
          acc[a][0] += qa.x * ka.x + qa.y * ka.y + qa.z * ka.z + qa.w * ka.w;
          acc[a][1] += qa.x * kb.x + qa.y * kb.y + qa.z * kb.z + qa.w * kb.w;
        }
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int i = i0 + a;
        if (need1 && j1 <= i) a_s[i * kAStride + j1] = acc[a][0] * pw[i - j1];
        if (need2 && j2 <= i) a_s[i * kAStride + j2] = acc[a][1] * pw[i - j2];
      }
    }

    // Inter-chunk part e^{beta_i} q_i^T S: partial dots over the thread's D_k quarter, then a
    // reduce-scatter over the 4 parts leaves row 4 g + part's sum with this thread.
    float o[kC / 4];
#pragma unroll
    for (int g = 0; g < kC / 4; ++g) {
      float partial[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (4 * g < len) {
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          const float* qrow = q_s + (4 * g + a) * kQkStride<D> + 4 * part;
#pragma unroll
          for (int m = 0; m < D / 16; ++m) {
            const float4 q4 = *reinterpret_cast<const float4*>(qrow + 16 * m);
            partial[a] = fmaf(q4.x, s[m * 4 + 0], partial[a]);
            partial[a] = fmaf(q4.y, s[m * 4 + 1], partial[a]);
            partial[a] = fmaf(q4.z, s[m * 4 + 2], partial[a]);
            partial[a] = fmaf(q4.w, s[m * 4 + 3], partial[a]);
          }
        }
      }
      const bool hi2 = (part & 2) != 0;
      const float send0 = hi2 ? partial[0] : partial[2];
      const float send1 = hi2 ? partial[1] : partial[3];
      const float b0 = (hi2 ? partial[2] : partial[0]) + __shfl_xor_sync(kFullMask, send0, 2);
      const float b1 = (hi2 ? partial[3] : partial[1]) + __shfl_xor_sync(kFullMask, send1, 2);
      const bool hi1 = (part & 1) != 0;
      const float sum = (hi1 ? b1 : b0) + __shfl_xor_sync(kFullMask, hi1 ? b0 : b1, 1);
      o[g] = sum * pw[4 * g + part + 1];
    }
    __syncthreads();

    // Intra-chunk part and the output rows this thread owns.
#pragma unroll
    for (int g = 0; g < kC / 4; ++g) {
      const int i = 4 * g + part;
      if (i < len) {
        float acc = o[g];
        const float* arow = a_s + i * kAStride;
        for (int j = 0; j <= i; ++j) acc = fmaf(arow[j], v_s[j * D + dv], acc);
        p.out[(c0 + i) * out_ld + h * D + dv] = p.scale * acc;
      }
    }

    UpdateState<D>(k_s, v_s, pw, len, part, dv, s);
    __syncthreads();
  }
  if (pp.segments == 1) StoreState<D>(p.state + h * D * D, part, dv, s);
}

// Phase A: the state a segment builds from zero.
template <int D>
__global__ void __launch_bounds__(kThreads<D>) LinearSegmentStateKernel(LinearPrefillParams pp) {
  const LinearAttentionParams& p = pp.attn;
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  float* k_s = smem;
  float* v_s = k_s + kC * kQkStride<D>;
  float* pw = v_s + kC * D;

  const int64_t h = blockIdx.x;
  const int64_t seg = blockIdx.y;
  const int part = threadIdx.x % kParts;
  const int dv = threadIdx.x / kParts;
  const int64_t begin = seg * pp.segment_tokens;
  const int64_t end = min(p.tokens, begin + pp.segment_tokens);
  FillDecay(p.log_decay[h], pw);
  float s[D / 4];
#pragma unroll
  for (int e = 0; e < D / 4; ++e) s[e] = 0.0f;
  for (int64_t c0 = begin; c0 < end; c0 += kC) {
    const int len = static_cast<int>(min(static_cast<int64_t>(kC), end - c0));
    LoadChunk<D>(p, h, c0, len, nullptr, k_s, v_s);
    __syncthreads();
    UpdateState<D>(k_s, v_s, pw, len, part, dv, s);
    __syncthreads();
  }
  StoreState<D>(pp.workspace + (h * pp.segments + seg) * D * D, part, dv, s);
}

// Phase B: per state entry, S_in[0] = state, S_in[s + 1] = e^{g len_s} S_in[s] + local_s.
// Replaces each segment's local state by its incoming state and writes the final state.
__global__ void LinearSegmentScanKernel(LinearPrefillParams pp) {
  const LinearAttentionParams& p = pp.attn;
  const int64_t dd = p.head_dim * p.head_dim;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t h = blockIdx.y;
  if (e >= dd) return;
  const float g = p.log_decay[h];
  float run = p.state[h * dd + e];
  for (int64_t s = 0; s < pp.segments; ++s) {
    const int64_t len = min(pp.segment_tokens, p.tokens - s * pp.segment_tokens);
    float* slot = pp.workspace + (h * pp.segments + s) * dd + e;
    const float local = *slot;
    *slot = run;
    run = expf(g * static_cast<float>(len)) * run + local;
  }
  p.state[h * dd + e] = run;
}

template <int D>
cudaError_t LaunchPrefill(const LinearPrefillParams& p, cudaStream_t stream) {
  const dim3 block(kThreads<D>);
  const dim3 grid(static_cast<unsigned>(p.attn.heads), static_cast<unsigned>(p.segments));
  if (p.segments > 1) {
    LinearSegmentStateKernel<D><<<grid, block, StateSmemBytes<D>(), stream>>>(p);
    const int64_t dd = static_cast<int64_t>(D) * D;
    LinearSegmentScanKernel<<<dim3(static_cast<unsigned>(CeilDiv(dd, 256)),
                                   static_cast<unsigned>(p.attn.heads)),
                              256, 0, stream>>>(p);
  }
  LinearChunkKernel<D><<<grid, block, ChunkSmemBytes<D>(), stream>>>(p);
  return cudaGetLastError();
}

template <int D>
cudaError_t SetSmemLimits() {
  cudaError_t e =
      cudaFuncSetAttribute(LinearChunkKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(ChunkSmemBytes<D>()));
  if (e != cudaSuccess) return e;
  return cudaFuncSetAttribute(LinearSegmentStateKernel<D>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(StateSmemBytes<D>()));
}

constexpr int kDecodeThreads = 256;

// One block per (head, sequence): the state is read and written once; the output reduction over
// row groups goes through shared memory.
__global__ void __launch_bounds__(kDecodeThreads) LinearDecodeKernel(LinearDecodeParams p) {
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  const int d = static_cast<int>(p.head_dim);
  const int64_t h = blockIdx.x;
  const int64_t b = blockIdx.y;
  float* q = smem;
  float* k = q + d;
  float* v = k + d;
  float* red = v + d;
  const int64_t row = b * p.ld + h * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    q[i] = p.q[row + i];
    k[i] = p.k[row + i];
    v[i] = p.v[row + i];
  }
  __syncthreads();
  const int cols4 = d / 4;
  const int c4 = threadIdx.x % cols4;
  const int rg = threadIdx.x / cols4;
  const int groups = blockDim.x / cols4;
  const float lambda = expf(p.log_decay[h]);
  float4* state = reinterpret_cast<float4*>(p.states[b] + h * d * d);
  const float4 v4 = *reinterpret_cast<const float4*>(v + 4 * c4);
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int dk = rg; dk < d; dk += groups) {
    float4 s4 = state[dk * cols4 + c4];
    const float kx = k[dk];
    const float qx = q[dk];
    s4.x = lambda * s4.x + kx * v4.x;
    s4.y = lambda * s4.y + kx * v4.y;
    s4.z = lambda * s4.z + kx * v4.z;
    s4.w = lambda * s4.w + kx * v4.w;
    state[dk * cols4 + c4] = s4;
    acc.x += qx * s4.x;
    acc.y += qx * s4.y;
    acc.z += qx * s4.z;
    acc.w += qx * s4.w;
  }
  *reinterpret_cast<float4*>(red + rg * d + 4 * c4) = acc;
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float sum = 0.0f;
    for (int g = 0; g < groups; ++g) sum += red[g * d + i];
    p.out[b * p.heads * d + h * d + i] = p.scale * sum;
  }
}

}  // namespace

size_t PlanLinearPrefill(LinearPrefillParams* p, int sm_count) {
  const LinearAttentionParams& a = p->attn;
  const int64_t chunks = std::max<int64_t>(1, CeilDiv(a.tokens, kLinearChunk));
  const size_t state_bytes = static_cast<size_t>(a.heads * a.head_dim * a.head_dim) * sizeof(float);
  // About two blocks per SM, and at most 256 MiB of segment states.
  int64_t segments =
      std::min(chunks, CeilDiv(2 * std::max(sm_count, 1), std::max<int64_t>(1, a.heads)));
  segments = std::min<int64_t>(segments, std::max<size_t>(1, (size_t{256} << 20) / state_bytes));
  segments = std::max<int64_t>(segments, 1);
  const int64_t chunks_per_segment = CeilDiv(chunks, segments);
  p->segments = CeilDiv(chunks, chunks_per_segment);
  p->segment_tokens = chunks_per_segment * kLinearChunk;
  return p->segments > 1 ? state_bytes * static_cast<size_t>(p->segments) : 0;
}

bool CanImplement(const LinearPrefillParams& p) {
  const LinearAttentionParams& a = p.attn;
  const bool dim_ok = a.head_dim == 32 || a.head_dim == 64 || a.head_dim == 128;
  return dim_ok && a.tokens >= 0 && a.heads > 0 && a.heads <= 65535 &&
         a.ld >= a.heads * a.head_dim && p.segments >= 1 && p.segments <= 65535 &&
         p.segment_tokens % kLinearChunk == 0 && p.segment_tokens * p.segments >= a.tokens &&
         (p.segments == 1 || p.workspace != nullptr) && a.q != nullptr && a.k != nullptr &&
         a.v != nullptr && a.out != nullptr && a.state != nullptr && a.log_decay != nullptr;
}

cudaError_t InitLinearPrefillKernels() {
  cudaError_t e = SetSmemLimits<32>();
  if (e == cudaSuccess) e = SetSmemLimits<64>();
  if (e == cudaSuccess) e = SetSmemLimits<128>();
  return e;
}

cudaError_t Launch(const LinearPrefillParams& p, cudaStream_t stream) {
  if (p.attn.tokens == 0) return cudaSuccess;
  switch (p.attn.head_dim) {
    case 32:
      return LaunchPrefill<32>(p, stream);
    case 64:
      return LaunchPrefill<64>(p, stream);
    default:
      return LaunchPrefill<128>(p, stream);
  }
}

bool CanImplement(const LinearDecodeParams& p) {
  const int64_t d = p.head_dim;
  return d >= 16 && d <= 256 && 1024 % d == 0 && p.batch >= 0 && p.batch <= 65535 && p.heads > 0 &&
         p.states != nullptr && p.q != nullptr && p.k != nullptr && p.v != nullptr &&
         p.out != nullptr && p.log_decay != nullptr;
}

cudaError_t Launch(const LinearDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return cudaSuccess;
  const int64_t d = p.head_dim;
  const int64_t groups = kDecodeThreads / (d / 4);
  const size_t smem = sizeof(float) * static_cast<size_t>(3 * d + groups * d);
  LinearDecodeKernel<<<dim3(static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch)),
                       kDecodeThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ringserve::kernels::cuda
