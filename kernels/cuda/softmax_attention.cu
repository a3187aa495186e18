#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/softmax_attention.cuh"

namespace ringserve::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

// ---- KV store ----

// B sequences with `tokens` new tokens each: query, key, value and output row b * tokens + t.
// Sequence b's cache is seqs[b] (device memory), or `single` when seqs is null (batch 1, passed
// by value so that the host stages nothing).
struct SeqBatch {
  const float* q;  // [B * tokens, H, D] at row stride ld
  const float* k;  // [B * tokens, Hkv, D] at row stride ld
  const float* v;
  int64_t ld;
  float* out;              // [B * tokens, H * D]
  const KvCacheRef* seqs;  // [B] or null
  KvCacheRef single;
  int64_t batch;
  int64_t tokens;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  float scale;
  // Decode only.
  int64_t splits;
  float* workspace;  // [B, Hkv, splits, tokens x group, D + 2] fp32
};

SeqBatch SingleSequence(const SoftmaxAttentionParams& a, int64_t splits, float* workspace) {
  return SeqBatch{a.q,
                  a.k,
                  a.v,
                  a.ld,
                  a.out,
                  nullptr,
                  KvCacheRef{a.k_cache, a.v_cache, a.capacity, a.past},
                  1,
                  a.tokens,
                  a.heads,
                  a.kv_heads,
                  a.head_dim,
                  a.scale,
                  splits,
                  workspace};
}

__device__ __forceinline__ KvCacheRef SeqOf(const SeqBatch& s, int64_t b) {
  return s.seqs != nullptr ? s.seqs[b] : s.single;
}

// Block (x, sequence b): stores the sequence's new K/V rows at positions past..past+tokens-1.
__global__ void StoreKvKernel(SeqBatch s) {
  const int64_t b = blockIdx.y;
  const KvCacheRef seq = SeqOf(s, b);
  const int64_t d = s.head_dim;
  const int64_t n = s.tokens * s.kv_heads * d;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (s.kv_heads * d);
    const int64_t g = (i / d) % s.kv_heads;
    const int64_t c = i % d;
    const int64_t src = (b * s.tokens + t) * s.ld + g * d + c;
    const int64_t dst = (g * seq.capacity + seq.past + t) * d + c;
    seq.k_cache[dst] = FloatToBf16(s.k[src]);
    seq.v_cache[dst] = FloatToBf16(s.v[src]);
  }
}

cudaError_t LaunchStoreKv(const SeqBatch& s, cudaStream_t stream) {
  const int64_t n = s.tokens * s.kv_heads * s.head_dim;
  StoreKvKernel<<<dim3(static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(n, 256), 1, 1 << 20)),
                       static_cast<unsigned>(s.batch)),
                  256, 0, stream>>>(s);
  return cudaGetLastError();
}

// ---- Prefill tiles (tensor cores) ----

constexpr int kTileRows = 64;  // query rows (token, head of the group) per block
constexpr int kTileKeys = 64;
constexpr int kPrefillWarps = kTileRows / 16;
constexpr int kPrefillThreads = kPrefillWarps * kWarp;
constexpr int kSStride = kTileKeys + 4;  // fp32 scores
constexpr int kPStride = kTileKeys + 8;  // bf16 probabilities

struct PrefillLayout {
  size_t q_hi, q_lo, k, v, s, p_hi, p_lo, o, corr, l, total;
};

__host__ __device__ constexpr size_t Align128(size_t x) { return (x + 127) / 128 * 128; }

template <int D>
__host__ __device__ constexpr PrefillLayout MakePrefillLayout(bool split) {
  constexpr size_t kBf16Tile = sizeof(uint16_t) * kTileRows * (D + 8);
  PrefillLayout l{};
  size_t at = 0;
  l.q_hi = at;
  at = Align128(at + kBf16Tile);
  l.q_lo = at;
  if (split) at = Align128(at + kBf16Tile);
  l.k = at;
  at = Align128(at + kBf16Tile);
  l.v = at;
  at = Align128(at + kBf16Tile);
  l.s = at;
  at = Align128(at + sizeof(float) * kTileRows * kSStride);
  l.p_hi = at;
  at = Align128(at + sizeof(uint16_t) * kTileRows * kPStride);
  l.p_lo = at;
  if (split) at = Align128(at + sizeof(uint16_t) * kTileRows * kPStride);
  l.o = at;
  at = Align128(at + sizeof(float) * kTileRows * (D + 4));
  l.corr = at;
  at = Align128(at + sizeof(float) * kTileRows);
  l.l = at;
  at = Align128(at + sizeof(float) * kTileRows);
  l.total = at;
  return l;
}

template <int D>
__global__ void __launch_bounds__(kPrefillThreads)
    AttentionPrefillKernel(SoftmaxAttentionCudaParams pp) {
  constexpr int kQs = D + 8;  // bf16 row stride of the Q, K and V tiles
  constexpr int kOs = D + 4;  // fp32 row stride of the output accumulator
  const SoftmaxAttentionParams& p = pp.attn;
  const bool split = pp.split_bf16;
  const PrefillLayout lay = MakePrefillLayout<D>(split);
  extern __shared__ float4 smem_f4[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(smem_f4);
  uint16_t* q_hi = reinterpret_cast<uint16_t*>(smem + lay.q_hi);
  uint16_t* q_lo = reinterpret_cast<uint16_t*>(smem + lay.q_lo);
  uint16_t* k_s = reinterpret_cast<uint16_t*>(smem + lay.k);
  uint16_t* v_s = reinterpret_cast<uint16_t*>(smem + lay.v);
  float* s_s = reinterpret_cast<float*>(smem + lay.s);
  uint16_t* p_hi = reinterpret_cast<uint16_t*>(smem + lay.p_hi);
  uint16_t* p_lo = reinterpret_cast<uint16_t*>(smem + lay.p_lo);
  float* o_s = reinterpret_cast<float*>(smem + lay.o);
  float* corr_s = reinterpret_cast<float*>(smem + lay.corr);
  float* l_s = reinterpret_cast<float*>(smem + lay.l);

  const int group = static_cast<int>(p.heads / p.kv_heads);
  const int tq = kTileRows / group;  // tokens per block
  const int64_t g = blockIdx.y;
  const int64_t t0 = (static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x) * tq;  // longest first
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;

  for (int idx = threadIdx.x; idx < kTileRows * D; idx += blockDim.x) {
    const int r = idx / D;
    const int c = idx % D;
    const int64_t t = t0 + r / group;
    const float x = t < p.tokens ? p.q[t * p.ld + (g * group + r % group) * D + c] : 0.0f;
    if (split) {
      SplitBf16(x, &q_hi[r * kQs + c], &q_lo[r * kQs + c]);
    } else {
      q_hi[r * kQs + c] = FloatToBf16(x);
    }
    o_s[r * kOs + c] = 0.0f;
  }

  // Each lane pair owns one row of the warp's 16 for the softmax: lanes 2r and 2r + 1 take the
  // even and odd columns of a key tile.
  const int my_row = 16 * warp + lane / 2;
  const int half = lane % 2;
  const int64_t my_token = t0 + my_row / group;
  const int64_t limit = my_token < p.tokens ? p.past + my_token : -1;  // last visible key
  float m = -INFINITY;
  float l = 0.0f;
  const int64_t kv_end = p.past + min(p.tokens, t0 + tq);
  const uint16_t* kc = p.k_cache + g * p.capacity * D;
  const uint16_t* vc = p.v_cache + g * p.capacity * D;
  __syncthreads();

  for (int64_t k0 = 0; k0 < kv_end; k0 += kTileKeys) {
    for (int idx = threadIdx.x; idx < kTileKeys * (D / 8); idx += blockDim.x) {
      const int j = idx / (D / 8);
      const int c = (idx % (D / 8)) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0);
      uint4 vv = make_uint4(0, 0, 0, 0);
      if (k0 + j < kv_end) {
        kv = *reinterpret_cast<const uint4*>(kc + (k0 + j) * D + c);
        vv = *reinterpret_cast<const uint4*>(vc + (k0 + j) * D + c);
      }
      *reinterpret_cast<uint4*>(k_s + j * kQs + c) = kv;
      *reinterpret_cast<uint4*>(v_s + j * kQs + c) = vv;
    }
    __syncthreads();

    // Scores of the warp's 16 rows against the 64 keys.
    for (int n = 0; n < kTileKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kb;
        wmma::load_matrix_sync(
            kb, reinterpret_cast<const __nv_bfloat16*>(k_s + 16 * n * kQs + 16 * kk), kQs);
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qa;
        wmma::load_matrix_sync(
            qa, reinterpret_cast<const __nv_bfloat16*>(q_hi + 16 * warp * kQs + 16 * kk), kQs);
        wmma::mma_sync(acc, qa, kb, acc);
        if (split) {
          wmma::load_matrix_sync(
              qa, reinterpret_cast<const __nv_bfloat16*>(q_lo + 16 * warp * kQs + 16 * kk), kQs);
          wmma::mma_sync(acc, qa, kb, acc);
        }
      }
      wmma::store_matrix_sync(s_s + 16 * warp * kSStride + 16 * n, acc, kSStride,
                              wmma::mem_row_major);
    }
    __syncwarp();

    {
      const float* srow = s_s + my_row * kSStride;
      float tmax = -INFINITY;
      for (int c = half; c < kTileKeys; c += 2) {
        if (k0 + c <= limit) tmax = fmaxf(tmax, srow[c] * p.scale);
      }
      tmax = fmaxf(tmax, __shfl_xor_sync(kFullMask, tmax, 1));
      const float m_new = fmaxf(m, tmax);
      const float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
      float sum = 0.0f;
      for (int c = half; c < kTileKeys; c += 2) {
        const float e = k0 + c <= limit ? expf(srow[c] * p.scale - m_new) : 0.0f;
        sum += e;
        if (split) {
          SplitBf16(e, &p_hi[my_row * kPStride + c], &p_lo[my_row * kPStride + c]);
        } else {
          p_hi[my_row * kPStride + c] = FloatToBf16(e);
        }
      }
      sum += __shfl_xor_sync(kFullMask, sum, 1);
      l = l * corr + sum;
      m = m_new;
      if (half == 0) corr_s[my_row] = corr;
    }
    __syncwarp();

    for (int idx = lane; idx < 16 * D; idx += kWarp) {
      const int r = 16 * warp + idx / D;
      o_s[r * kOs + idx % D] *= corr_s[r];
    }
    __syncwarp();

    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      float* tile = o_s + 16 * warp * kOs + 16 * n;
      wmma::load_matrix_sync(acc, tile, kOs, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
        wmma::load_matrix_sync(
            vb, reinterpret_cast<const __nv_bfloat16*>(v_s + 16 * kk * kQs + 16 * n), kQs);
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pa;
        wmma::load_matrix_sync(
            pa, reinterpret_cast<const __nv_bfloat16*>(p_hi + 16 * warp * kPStride + 16 * kk),
            kPStride);
        wmma::mma_sync(acc, pa, vb, acc);
        if (split) {
          wmma::load_matrix_sync(
              pa, reinterpret_cast<const __nv_bfloat16*>(p_lo + 16 * warp * kPStride + 16 * kk),
              kPStride);
          wmma::mma_sync(acc, pa, vb, acc);
        }
      }
      wmma::store_matrix_sync(tile, acc, kOs, wmma::mem_row_major);
    }
    __syncthreads();
  }

  if (half == 0) l_s[my_row] = l;
  __syncwarp();
  const int64_t out_ld = p.heads * D;
  for (int idx = lane; idx < 16 * D; idx += kWarp) {
    const int r = 16 * warp + idx / D;
    const int c = idx % D;
    const int64_t t = t0 + r / group;
    if (t < p.tokens) {
      p.out[t * out_ld + (g * group + r % group) * D + c] = o_s[r * kOs + c] * (1.0f / l_s[r]);
    }
  }
}

// ---- Split-KV decode ----

constexpr int kDecodeThreads = 256;
constexpr int kDecodeMaxRows = 32;
constexpr int kDecodeKeys = kDecodeThreads;  // one key per thread per tile
constexpr int64_t kMaxDecodeSplits = 64;

size_t DecodeSmemBytes(int64_t rows, int64_t d) {
  return sizeof(float) * static_cast<size_t>(rows * d + rows * kDecodeKeys + 3 * rows + rows * d);
}

// Block (split, kv head g, sequence b): the split's key range of the sequence for all its
// rows = tokens x group; writes the unnormalised output, running max and sum of each row to the
// workspace. The range is [split, split + 1) x split_keys with split_keys the sequence's length
// over the splits rounded up to whole tiles; an empty range writes m = -inf, l = 0.
__global__ void __launch_bounds__(kDecodeThreads) AttentionDecodeKernel(SeqBatch s) {
  const int d = static_cast<int>(s.head_dim);
  const int group = static_cast<int>(s.heads / s.kv_heads);
  const int rows = static_cast<int>(s.tokens) * group;
  const int64_t split = blockIdx.x;
  const int64_t g = blockIdx.y;
  const int64_t b = blockIdx.z;
  const KvCacheRef seq = SeqOf(s, b);
  const int64_t kv_len = seq.past + s.tokens;
  const int64_t per_split = (kv_len + s.splits - 1) / s.splits;
  const int64_t split_keys = (per_split + kDecodeKeys - 1) / kDecodeKeys * kDecodeKeys;
  const int64_t k_begin = split * split_keys;
  const int64_t k_end = min(kv_len, k_begin + split_keys);
  const int t = threadIdx.x;
  float* ws = s.workspace + ((b * s.kv_heads + g) * s.splits + split) * rows * (d + 2);
  if (k_begin >= k_end) {
    for (int r = t; r < rows; r += blockDim.x) {
      ws[r * (d + 2) + d] = -INFINITY;
      ws[r * (d + 2) + d + 1] = 0.0f;
    }
    return;
  }
  extern __shared__ float4 smem_f4[];
  float* q_s = reinterpret_cast<float*>(smem_f4);
  float* s_s = q_s + rows * d;
  float* m_s = s_s + rows * kDecodeKeys;
  float* l_s = m_s + rows;
  float* corr_s = l_s + rows;
  float* o_s = corr_s + rows;
  const int warp = t / kWarp;
  const int lane = t % kWarp;

  for (int idx = t; idx < rows * d; idx += blockDim.x) {
    const int r = idx / d;
    const int c = idx % d;
    q_s[idx] = s.q[(b * s.tokens + r / group) * s.ld + (g * group + r % group) * d + c];
    o_s[idx] = 0.0f;
  }
  for (int r = t; r < rows; r += blockDim.x) {
    m_s[r] = -INFINITY;
    l_s[r] = 0.0f;
  }
  const uint16_t* kc = seq.k_cache + g * seq.capacity * d;
  const uint16_t* vc = seq.v_cache + g * seq.capacity * d;
  const int pairs = d / 2;
  const int dp = t % pairs;
  const int ks = t / pairs;
  const int subsets = blockDim.x / pairs;
  float acc[kDecodeMaxRows][2];
#pragma unroll
  for (int r = 0; r < kDecodeMaxRows; ++r) acc[r][0] = acc[r][1] = 0.0f;
  __syncthreads();

  for (int64_t kt = k_begin; kt < k_end; kt += kDecodeKeys) {
    const int64_t j = kt + t;
    float dots[kDecodeMaxRows];
#pragma unroll
    for (int r = 0; r < kDecodeMaxRows; ++r) dots[r] = 0.0f;
    if (j < k_end) {
      const uint16_t* krow = kc + j * d;
      for (int c = 0; c < d; c += 8) {
        float kf[8];
        Unpack8(*reinterpret_cast<const uint4*>(krow + c), kf);
#pragma unroll
        for (int r = 0; r < kDecodeMaxRows; ++r) {
          if (r < rows) {
            const float4 x = *reinterpret_cast<const float4*>(q_s + r * d + c);
            const float4 y = *reinterpret_cast<const float4*>(q_s + r * d + c + 4);
            dots[r] += x.x * kf[0] + x.y * kf[1] + x.z * kf[2] + x.w * kf[3] + y.x * kf[4] +
                       y.y * kf[5] + y.z * kf[6] + y.w * kf[7];
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kDecodeMaxRows; ++r) {
      if (r < rows) {
        const bool visible = j < k_end && j <= seq.past + r / group;
        s_s[r * kDecodeKeys + t] = visible ? dots[r] * s.scale : -INFINITY;
      }
    }
    __syncthreads();

    for (int r = warp; r < rows; r += blockDim.x / kWarp) {
      float* srow = s_s + r * kDecodeKeys;
      float tmax = -INFINITY;
      for (int c = lane; c < kDecodeKeys; c += kWarp) tmax = fmaxf(tmax, srow[c]);
      tmax = WarpMax(tmax);
      const float m_old = m_s[r];
      const float m_new = fmaxf(m_old, tmax);
      const float corr = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
      float sum = 0.0f;
      for (int c = lane; c < kDecodeKeys; c += kWarp) {
        const float x = srow[c];
        const float e = x == -INFINITY ? 0.0f : expf(x - m_new);
        srow[c] = e;
        sum += e;
      }
      sum = WarpSum(sum);
      if (lane == 0) {
        m_s[r] = m_new;
        l_s[r] = l_s[r] * corr + sum;
        corr_s[r] = corr;
      }
    }
    __syncthreads();

    const int tile_keys = static_cast<int>(min(static_cast<int64_t>(kDecodeKeys), k_end - kt));
#pragma unroll
    for (int r = 0; r < kDecodeMaxRows; ++r) {
      if (r < rows) {
        acc[r][0] *= corr_s[r];
        acc[r][1] *= corr_s[r];
      }
    }
    for (int jj = ks; jj < tile_keys; jj += subsets) {
      const uint32_t v2 = *reinterpret_cast<const uint32_t*>(vc + (kt + jj) * d + 2 * dp);
      const float v0 = __uint_as_float(v2 << 16);
      const float v1 = __uint_as_float(v2 & 0xffff0000u);
#pragma unroll
      for (int r = 0; r < kDecodeMaxRows; ++r) {
        if (r < rows) {
          const float e = s_s[r * kDecodeKeys + jj];
          acc[r][0] = fmaf(e, v0, acc[r][0]);
          acc[r][1] = fmaf(e, v1, acc[r][1]);
        }
      }
    }
    __syncthreads();
  }

  for (int sub = 0; sub < subsets; ++sub) {
    if (ks == sub) {
#pragma unroll
      for (int r = 0; r < kDecodeMaxRows; ++r) {
        if (r < rows) {
          o_s[r * d + 2 * dp] += acc[r][0];
          o_s[r * d + 2 * dp + 1] += acc[r][1];
        }
      }
    }
    __syncthreads();
  }
  for (int idx = t; idx < rows * d; idx += blockDim.x) ws[(idx / d) * (d + 2) + idx % d] = o_s[idx];
  for (int r = t; r < rows; r += blockDim.x) {
    ws[r * (d + 2) + d] = m_s[r];
    ws[r * (d + 2) + d + 1] = l_s[r];
  }
}

// Block (row, kv head g, sequence b): merges the splits of one query row, skipping those that
// saw no visible key (m = -inf).
__global__ void AttentionCombineKernel(SeqBatch s) {
  const int d = static_cast<int>(s.head_dim);
  const int group = static_cast<int>(s.heads / s.kv_heads);
  const int rows = static_cast<int>(s.tokens) * group;
  const int r = blockIdx.x;
  const int64_t g = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t stride = static_cast<int64_t>(rows) * (d + 2);
  const float* base = s.workspace + (b * s.kv_heads + g) * s.splits * stride + r * (d + 2);
  float m = -INFINITY;
  for (int64_t i = 0; i < s.splits; ++i) m = fmaxf(m, base[i * stride + d]);
  float l = 0.0f;
  for (int64_t i = 0; i < s.splits; ++i) {
    const float mi = base[i * stride + d];
    if (mi != -INFINITY) l += base[i * stride + d + 1] * expf(mi - m);
  }
  const float inv = 1.0f / l;
  const int64_t row = b * s.tokens + r / group;
  float* out = s.out + row * s.heads * d + (g * group + r % group) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float o = 0.0f;
    for (int64_t i = 0; i < s.splits; ++i) {
      const float mi = base[i * stride + d];
      if (mi != -INFINITY) o += base[i * stride + c] * expf(mi - m);
    }
    out[c] = o * inv;
  }
}

// Stores the new K/V rows, then the split-KV decode and its combine.
cudaError_t LaunchDecode(const SeqBatch& s, cudaStream_t stream) {
  const cudaError_t e = LaunchStoreKv(s, stream);
  if (e != cudaSuccess) return e;
  const int64_t rows = s.tokens * (s.heads / s.kv_heads);
  AttentionDecodeKernel<<<dim3(static_cast<unsigned>(s.splits), static_cast<unsigned>(s.kv_heads),
                               static_cast<unsigned>(s.batch)),
                          kDecodeThreads, DecodeSmemBytes(rows, s.head_dim), stream>>>(s);
  AttentionCombineKernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(s.kv_heads),
                                static_cast<unsigned>(s.batch)),
                           128, 0, stream>>>(s);
  return cudaGetLastError();
}

// Key splits for `pairs` (sequence, KV head) pairs: about two blocks per SM in all.
int64_t DecodeSplits(int sm_count, int64_t pairs) {
  return std::clamp<int64_t>(CeilDiv(2 * std::max(sm_count, 1), std::max<int64_t>(pairs, 1)), 1,
                             kMaxDecodeSplits);
}

bool HeadsSupported(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && kv_heads > 0 &&
         kv_heads <= 65535 && heads > 0 && heads % kv_heads == 0;
}

template <int D>
cudaError_t LaunchPrefill(const SoftmaxAttentionCudaParams& p, cudaStream_t stream) {
  const int64_t group = p.attn.heads / p.attn.kv_heads;
  const int64_t tq = kTileRows / group;
  const dim3 grid(static_cast<unsigned>(CeilDiv(p.attn.tokens, tq)),
                  static_cast<unsigned>(p.attn.kv_heads));
  AttentionPrefillKernel<D>
      <<<grid, kPrefillThreads, MakePrefillLayout<D>(p.split_bf16).total, stream>>>(p);
  return cudaGetLastError();
}

template <int D>
cudaError_t SetPrefillSmemLimit() {
  return cudaFuncSetAttribute(AttentionPrefillKernel<D>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(MakePrefillLayout<D>(true).total));
}

}  // namespace

size_t PlanSoftmaxAttention(SoftmaxAttentionCudaParams* p, int sm_count) {
  const SoftmaxAttentionParams& a = p->attn;
  const int64_t group = a.kv_heads > 0 ? a.heads / a.kv_heads : 1;
  const int64_t rows = a.tokens * group;
  p->decode = rows <= kDecodeMaxRows;
  p->splits = 1;
  if (!p->decode || a.tokens <= 0 || !HeadsSupported(a.heads, a.kv_heads, a.head_dim)) return 0;
  // The length is known here: no more splits than 256-key tiles.
  p->splits = std::min(DecodeSplits(sm_count, a.kv_heads),
                       std::max<int64_t>(1, CeilDiv(a.past + a.tokens, kDecodeKeys)));
  return sizeof(float) * static_cast<size_t>(a.kv_heads * p->splits * rows * (a.head_dim + 2));
}

bool CanImplement(const SoftmaxAttentionCudaParams& p) {
  const SoftmaxAttentionParams& a = p.attn;
  if (!HeadsSupported(a.heads, a.kv_heads, a.head_dim)) return false;
  if (a.tokens < 0 || a.past < 0 || a.past + a.tokens > a.capacity) return false;
  if (a.ld < a.heads * a.head_dim) return false;
  if (a.q == nullptr || a.k == nullptr || a.v == nullptr || a.out == nullptr ||
      a.k_cache == nullptr || a.v_cache == nullptr) {
    return false;
  }
  const int64_t group = a.heads / a.kv_heads;
  if (p.decode) {
    return a.tokens * group <= kDecodeMaxRows && p.splits >= 1 && p.splits <= kMaxDecodeSplits &&
           (a.tokens == 0 || p.workspace != nullptr);
  }
  return kTileRows % group == 0 && CeilDiv(a.tokens, kTileRows / group) < (1ll << 31);
}

cudaError_t InitSoftmaxAttentionKernels() {
  cudaError_t e =
      cudaFuncSetAttribute(AttentionDecodeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(DecodeSmemBytes(kDecodeMaxRows, 128)));
  if (e == cudaSuccess) e = SetPrefillSmemLimit<32>();
  if (e == cudaSuccess) e = SetPrefillSmemLimit<64>();
  if (e == cudaSuccess) e = SetPrefillSmemLimit<128>();
  return e;
}

cudaError_t Launch(const SoftmaxAttentionCudaParams& p, cudaStream_t stream) {
  const SoftmaxAttentionParams& a = p.attn;
  if (a.tokens == 0) return cudaSuccess;
  const SeqBatch s = SingleSequence(a, p.splits, p.workspace);
  if (p.decode) return LaunchDecode(s, stream);
  const cudaError_t e = LaunchStoreKv(s, stream);
  if (e != cudaSuccess) return e;
  switch (a.head_dim) {
    case 32:
      return LaunchPrefill<32>(p, stream);
    case 64:
      return LaunchPrefill<64>(p, stream);
    default:
      return LaunchPrefill<128>(p, stream);
  }
}

size_t PlanSoftmaxDecode(SoftmaxDecodeCudaParams* p, int sm_count) {
  const SoftmaxDecodeParams& a = p->step;
  p->splits = 1;
  if (a.batch <= 0 || !HeadsSupported(a.heads, a.kv_heads, a.head_dim)) return 0;
  p->splits = DecodeSplits(sm_count, a.batch * a.kv_heads);
  const int64_t group = a.heads / a.kv_heads;
  return sizeof(float) *
         static_cast<size_t>(a.batch * a.kv_heads * p->splits * group * (a.head_dim + 2));
}

bool CanImplement(const SoftmaxDecodeCudaParams& p) {
  const SoftmaxDecodeParams& a = p.step;
  if (!HeadsSupported(a.heads, a.kv_heads, a.head_dim)) return false;
  if (a.heads / a.kv_heads > kDecodeMaxRows || a.ld < a.heads * a.head_dim) return false;
  if (a.batch < 0 || a.batch > 65535) return false;
  if (a.batch == 0) return true;
  return a.q != nullptr && a.k != nullptr && a.v != nullptr && a.out != nullptr &&
         a.seqs != nullptr && p.splits >= 1 && p.splits <= kMaxDecodeSplits &&
         p.workspace != nullptr;
}

cudaError_t Launch(const SoftmaxDecodeCudaParams& p, cudaStream_t stream) {
  const SoftmaxDecodeParams& a = p.step;
  if (a.batch == 0) return cudaSuccess;
  const SeqBatch s{a.q, a.k,     a.v,        a.ld,       a.out,   a.seqs,   KvCacheRef{}, a.batch,
                   1,   a.heads, a.kv_heads, a.head_dim, a.scale, p.splits, p.workspace};
  return LaunchDecode(s, stream);
}

}  // namespace ringserve::kernels::cuda
