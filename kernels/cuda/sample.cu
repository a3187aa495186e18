#include <algorithm>
#include <climits>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/sampling.h"

namespace ringserve::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / kWarp;

size_t Align256(size_t x) { return (x + 255) / 256 * 256; }

// Bits of the sampled-row index in the sort key, above the 32 bits of the logit.
int RowBits(int64_t n_sample) {
  int bits = 1;
  while ((int64_t{1} << bits) < n_sample) ++bits;
  return bits;
}

struct Workspace {
  uint64_t* keys_in;
  uint64_t* keys_out;
  int32_t* vals_in;
  int32_t* vals_out;
  void* temp;
  size_t temp_bytes;
  size_t total;
};

Workspace Carve(void* base, int64_t n_sample, int64_t vocab) {
  const size_t items = static_cast<size_t>(n_sample * vocab);
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(items),
      0, 32 + RowBits(n_sample));
  char* at = static_cast<char*>(base);
  Workspace w{};
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* p = at == nullptr ? nullptr : at + off;
    off += Align256(bytes);
    return p;
  };
  w.keys_in = reinterpret_cast<uint64_t*>(take(items * sizeof(uint64_t)));
  w.keys_out = reinterpret_cast<uint64_t*>(take(items * sizeof(uint64_t)));
  w.vals_in = reinterpret_cast<int32_t*>(take(items * sizeof(int32_t)));
  w.vals_out = reinterpret_cast<int32_t*>(take(items * sizeof(int32_t)));
  w.temp = take(temp_bytes);
  w.temp_bytes = temp_bytes;
  w.total = off;
  return w;
}

// First maximum of each row (cpu::SampleRow's greedy rule).
__global__ void __launch_bounds__(kThreads)
    ArgmaxKernel(const float* logits, int64_t vocab, int32_t* ids) {
  __shared__ float s_val[kWarps];
  __shared__ int s_idx[kWarps];
  const float* row = logits + blockIdx.x * vocab;
  float bv = -INFINITY;
  int bi = INT_MAX;
  // NaN never qualifies (as on the CPU, where every comparison with it fails).
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    if (x > bv || (bi == INT_MAX && x == bv)) {
      bv = x;
      bi = static_cast<int>(i);
    }
  }
  auto better = [](float v, int i, float bv2, int bi2) {
    return i != INT_MAX && (bi2 == INT_MAX || v > bv2 || (v == bv2 && i < bi2));
  };
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, bv, o);
    const int oi = __shfl_xor_sync(kFullMask, bi, o);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (lane == 0) {
    s_val[warp] = bv;
    s_idx[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = s_val[0];
    int idx = s_idx[0];
    for (int w = 1; w < kWarps; ++w) {
      if (better(s_val[w], s_idx[w], v, idx)) {
        v = s_val[w];
        idx = s_idx[w];
      }
    }
    // The CPU starts at index 0 and never leaves a NaN there.
    ids[blockIdx.x] = idx == INT_MAX || isnan(row[0]) ? 0 : idx;
  }
}

// Key of (sampled row s, logit) so that an ascending stable sort lists rows in order and each
// row by logit descending, equal logits by index (the input order). -0.0 counts as +0.0; NaN
// sorts last, so the candidates (weight >= min_p, which NaN fails) stay a prefix of the order.
__global__ void BuildKeysKernel(SampleCudaParams p, Workspace w) {
  const int64_t n = p.n_sample * p.vocab;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / p.vocab;
    const int64_t v = i % p.vocab;
    const float f = p.logits[static_cast<int64_t>(p.sample_rows[s]) * p.vocab + v];
    const uint32_t bits = f == 0.0f ? 0u : __float_as_uint(f);
    const uint32_t ascending = (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
    const uint32_t descending = isnan(f) ? 0xffffffffu : ~ascending;
    w.keys_in[i] = (static_cast<uint64_t>(s) << 32) | static_cast<uint64_t>(descending);
    w.vals_in[i] = static_cast<int32_t>(v);
  }
}

__device__ double BlockSum(double v, double* scratch) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int i = 0; i < kWarps; ++i) total += scratch[i];
  __syncthreads();
  return total;
}

// Inclusive prefix sum over the block; *tile_total receives the sum of all values.
__device__ double BlockInclusiveScan(double v, double* scratch, double* tile_total) {
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int o = 1; o < kWarp; o <<= 1) {
    const double n = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == kWarp - 1) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double x = scratch[lane];
#pragma unroll
    for (int o = 1; o < kWarp; o <<= 1) {
      const double n = __shfl_up_sync(kFullMask, x, o);
      if (lane >= o) x += n;
    }
    scratch[lane] = x;
  }
  __syncthreads();
  if (warp > 0) v += scratch[warp - 1];
  *tile_total = scratch[kWarps - 1];
  __syncthreads();
  return v;
}

// The first i < limit whose running sum of values[i] / div satisfies `reached`, or -1.
template <typename Reached>
__device__ int64_t FirstReached(const double* values, int64_t limit, double div, Reached reached,
                                double* scratch, int* first) {
  double carry = 0.0;
  for (int64_t base = 0; base < limit; base += kThreads) {
    if (threadIdx.x == 0) *first = INT_MAX;
    const int64_t i = base + threadIdx.x;
    const double v = i < limit ? values[i] / div : 0.0;
    double tile_total = 0.0;
    const double cumulative = carry + BlockInclusiveScan(v, scratch, &tile_total);
    if (i < limit && reached(cumulative)) atomicMin(first, static_cast<int>(threadIdx.x));
    __syncthreads();
    const int f = *first;
    __syncthreads();
    if (f != INT_MAX) return base + f;
    carry += tile_total;
  }
  return -1;
}

__global__ void __launch_bounds__(kThreads) SampleFinishKernel(SampleCudaParams p, Workspace w) {
  __shared__ double scratch[kWarps];
  __shared__ int first;
  const int64_t s = blockIdx.x;
  const int64_t row = p.sample_rows[s];
  const SamplingParams prm = p.params[row];
  const float* logits = p.logits + row * p.vocab;
  const int32_t* order = w.vals_out + s * p.vocab;
  double* weight = reinterpret_cast<double*>(w.keys_in) + s * p.vocab;  // free after the sort
  const double max_logit = logits[order[0]];
  const double inv_t = 1.0 / prm.temperature;
  const double min_keep = prm.min_p > 0.0f ? static_cast<double>(prm.min_p) : 0.0;

  double kept = 0.0;
  for (int64_t i = threadIdx.x; i < p.vocab; i += kThreads) {
    const double x = exp((static_cast<double>(logits[order[i]]) - max_logit) * inv_t);
    weight[i] = x;
    kept += x >= min_keep ? 1.0 : 0.0;
  }
  const int64_t count = static_cast<int64_t>(BlockSum(kept, scratch));
  // No candidate (e.g. a row of -inf, where every weight is NaN): keep the ArgmaxKernel id
  // rather than read order[-1] below.
  if (count == 0) return;
  int64_t n = count;
  if (prm.top_k > 0 && prm.top_k < count) n = prm.top_k;

  double total = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) total += weight[i];
  total = BlockSum(total, scratch);
  if (prm.top_p < 1.0f) {
    const double top_p = prm.top_p;
    const int64_t cut = FirstReached(
        weight, n, total, [top_p](double c) { return c >= top_p; }, scratch, &first);
    if (cut >= 0) n = cut + 1;
    total = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) total += weight[i];
    total = BlockSum(total, scratch);
  }
  const double target = SampleUniform(prm.seed, prm.position) * total;
  const int64_t pick = FirstReached(
      weight, n, 1.0, [target](double c) { return target < c; }, scratch, &first);
  if (threadIdx.x == 0) p.ids[row] = order[pick >= 0 ? pick : n - 1];
}

unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(n, 256), 1, 1 << 20));
}

}  // namespace

size_t SampleWorkspaceBytes(int64_t n_sample, int64_t vocab) {
  if (n_sample == 0) return 0;
  return Carve(nullptr, n_sample, vocab).total;
}

bool CanImplement(const SampleCudaParams& p) {
  return p.rows >= 0 && p.rows < (1ll << 31) && p.vocab > 0 && p.vocab < (1ll << 31) &&
         p.n_sample >= 0 && p.n_sample <= p.rows && p.n_sample * p.vocab < (1ll << 31) &&
         p.logits != nullptr && p.ids != nullptr &&
         (p.n_sample == 0 ||
          (p.params != nullptr && p.sample_rows != nullptr && p.workspace != nullptr &&
           p.workspace_bytes >= SampleWorkspaceBytes(p.n_sample, p.vocab)));
}

cudaError_t Launch(const SampleCudaParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  ArgmaxKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p.logits, p.vocab, p.ids);
  if (p.n_sample == 0) return cudaGetLastError();
  const Workspace w = Carve(p.workspace, p.n_sample, p.vocab);
  BuildKeysKernel<<<GridFor(p.n_sample * p.vocab), 256, 0, stream>>>(p, w);
  size_t temp_bytes = w.temp_bytes;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(
      w.temp, temp_bytes, w.keys_in, w.keys_out, w.vals_in, w.vals_out,
      static_cast<int>(p.n_sample * p.vocab), 0, 32 + RowBits(p.n_sample), stream);
  if (e != cudaSuccess) return e;
  SampleFinishKernel<<<static_cast<unsigned>(p.n_sample), kThreads, 0, stream>>>(p, w);
  return cudaGetLastError();
}

}  // namespace ringserve::kernels::cuda
