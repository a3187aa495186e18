#include <algorithm>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace ringserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Enough blocks for a grid-stride loop over n items.
unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(n, kThreads), 1, 1 << 20));
}

__global__ void EmbedKernel(EmbedParams p) {
  const int64_t row = blockIdx.x;
  const uint16_t* src = p.table + static_cast<int64_t>(p.ids[row]) * p.cols;
  float* dst = p.out + row * p.cols;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = Bf16ToFloat(src[c]);
}

// One warp per (row, group); groups of at most 1024 channels.
__global__ void RmsNormWarpKernel(RmsNormParams p, int64_t width, int64_t total) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (id >= total) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t r = id / p.groups;
  const int64_t off = (id % p.groups) * width;
  const float* x = p.x + r * p.ldx + off;
  float* y = p.y + r * p.ldy + off;
  const float* w = p.weight + off;
  float sum = 0.0f;
  for (int64_t i = lane; i < width; i += kWarp) sum += x[i] * x[i];
  sum = WarpSum(sum);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(width) + p.eps);
  for (int64_t i = lane; i < width; i += kWarp) y[i] = x[i] * inv * w[i];
}

// One block per (row, group) for wide groups.
__global__ void RmsNormBlockKernel(RmsNormParams p, int64_t width) {
  __shared__ float partial[kThreads / kWarp];
  __shared__ float inv_shared;
  const int64_t r = blockIdx.x / p.groups;
  const int64_t off = (blockIdx.x % p.groups) * width;
  const float* x = p.x + r * p.ldx + off;
  float* y = p.y + r * p.ldy + off;
  const float* w = p.weight + off;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) sum += x[i] * x[i];
  sum = WarpSum(sum);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int i = 0; i < static_cast<int>(blockDim.x / kWarp); ++i) total += partial[i];
    inv_shared = 1.0f / sqrtf(total / static_cast<float>(width) + p.eps);
  }
  __syncthreads();
  const float inv = inv_shared;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) y[i] = x[i] * inv * w[i];
}

// One thread per (row, rotary pair j): the angle in fp64 as on the CPU, then every head.
__global__ void RopeKernel(RopeParams p, int64_t half) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= p.rows * half) return;
  const int64_t r = id / half;
  const int64_t j = id % half;
  const double inv_freq = pow(p.theta, -2.0 * static_cast<double>(j) / p.rotary_dim);
  const double angle = static_cast<double>(p.positions[r]) * inv_freq;
  double s, c;
  sincos(angle, &s, &c);
  const float cs = static_cast<float>(c);
  const float sn = static_cast<float>(s);
  for (int64_t h = 0; h < p.heads; ++h) {
    float* x = p.x + r * p.ld + h * p.head_dim;
    const float x0 = x[j];
    const float x1 = x[j + half];
    x[j] = x0 * cs - x1 * sn;
    x[j + half] = x1 * cs + x0 * sn;
  }
}

__global__ void SiluMulKernel(SiluMulParams p) {
  const int64_t n = p.rows * p.inter;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.inter;
    const int64_t c = i % p.inter;
    const float g = p.gu[r * 2 * p.inter + c];
    const float u = p.gu[r * 2 * p.inter + p.inter + c];
    p.out[i] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void SigmoidMulKernel(SigmoidMulParams p) {
  const int64_t n = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.cols;
    const int64_t c = i % p.cols;
    p.x[r * p.ldx + c] *= 1.0f / (1.0f + expf(-p.g[r * p.ldg + c]));
  }
}

__global__ void AddKernel(AddParams p) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p.y[i] += p.x[i];
  }
}

__global__ void FillKernel(FillParams p) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p.x[i] = p.value;
  }
}

__global__ void ToBf16Kernel(ToBf16Params p) {
  const int64_t n = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.cols;
    const int64_t c = i % p.cols;
    const int64_t src = p.gather != nullptr ? p.gather[r] / p.gather_div : r;
    const float v = p.x[src * p.ldx + c];
    if (p.lo != nullptr) {
      SplitBf16(v, &p.hi[i], &p.lo[i]);
    } else {
      p.hi[i] = FloatToBf16(v);
    }
  }
}

}  // namespace

bool CanImplement(const EmbedParams& p) {
  return p.table != nullptr && p.ids != nullptr && p.out != nullptr && p.cols > 0 && p.n >= 0 &&
         p.n < (1ll << 31);
}

cudaError_t Launch(const EmbedParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  EmbedKernel<<<static_cast<unsigned>(p.n), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const RmsNormParams& p) {
  return p.rows >= 0 && p.cols > 0 && p.groups > 0 && p.cols % p.groups == 0 &&
         p.rows * p.groups < (1ll << 31) && p.x != nullptr && p.y != nullptr && p.weight != nullptr;
}

cudaError_t Launch(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  const int64_t width = p.cols / p.groups;
  const int64_t total = p.rows * p.groups;
  if (width <= 1024) {
    constexpr int kWarpsPerBlock = kThreads / kWarp;
    RmsNormWarpKernel<<<static_cast<unsigned>(CeilDiv(total, kWarpsPerBlock)), kThreads, 0,
                        stream>>>(p, width, total);
  } else {
    RmsNormBlockKernel<<<static_cast<unsigned>(total), kThreads, 0, stream>>>(p, width);
  }
  return cudaGetLastError();
}

bool CanImplement(const RopeParams& p) {
  return p.rows >= 0 && p.heads > 0 && p.rotary_dim > 0 && p.rotary_dim % 2 == 0 &&
         p.rotary_dim <= p.head_dim && p.x != nullptr && p.positions != nullptr &&
         p.rows * (p.rotary_dim / 2) < (1ll << 40);
}

cudaError_t Launch(const RopeParams& p, cudaStream_t stream) {
  const int64_t half = p.rotary_dim / 2;
  if (p.rows == 0) return cudaSuccess;
  RopeKernel<<<static_cast<unsigned>(CeilDiv(p.rows * half, kThreads)), kThreads, 0, stream>>>(
      p, half);
  return cudaGetLastError();
}

bool CanImplement(const SiluMulParams& p) {
  return p.rows >= 0 && p.inter > 0 && p.gu != nullptr && p.out != nullptr;
}

cudaError_t Launch(const SiluMulParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  SiluMulKernel<<<GridFor(p.rows * p.inter), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const SigmoidMulParams& p) {
  return p.rows >= 0 && p.cols > 0 && p.x != nullptr && p.g != nullptr;
}

cudaError_t Launch(const SigmoidMulParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  SigmoidMulKernel<<<GridFor(p.rows * p.cols), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const AddParams& p) { return p.n >= 0 && p.x != nullptr && p.y != nullptr; }

cudaError_t Launch(const AddParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  AddKernel<<<GridFor(p.n), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const FillParams& p) { return p.n >= 0 && p.x != nullptr; }

cudaError_t Launch(const FillParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  FillKernel<<<GridFor(p.n), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool CanImplement(const ToBf16Params& p) {
  return p.rows >= 0 && p.cols > 0 && p.x != nullptr && p.hi != nullptr && p.gather_div > 0;
}

cudaError_t Launch(const ToBf16Params& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  ToBf16Kernel<<<GridFor(p.rows * p.cols), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ringserve::kernels::cuda
