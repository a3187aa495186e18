#include "kernels/cpu/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "common/base/bf16.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/sampling.h"

namespace ringserve::kernels::cpu {

using base::Bf16ToFloat;
using base::FloatToBf16;

void LinearAttentionHead(const LinearAttentionParams& p, int64_t h) {
  const int64_t d = p.head_dim;
  const int64_t c = p.block;
  const float g = p.log_decay[h];
  float* state = p.state + h * d * d;
  std::vector<float> q(c * d), k(c * d), v(c * d), kd(c * d), o(c * d), a(c * c);
  std::vector<float> pw(c + 1);
  for (int64_t i = 0; i <= c; ++i) pw[i] = std::exp(g * static_cast<float>(i));
  for (int64_t c0 = 0; c0 < p.tokens; c0 += c) {
    const int64_t len = std::min(c, p.tokens - c0);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t row = (c0 + i) * p.ld + h * d;
      std::copy_n(p.q + row, d, q.data() + i * d);
      std::copy_n(p.k + row, d, k.data() + i * d);
      std::copy_n(p.v + row, d, v.data() + i * d);
    }
    // Contribution of the incoming state: e^{beta_i} q_i^T S.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, d, d, 1.0f, q.data(), d, state, d,
                0.0f, o.data(), d);
    for (int64_t i = 0; i < len; ++i) {
      const float f = pw[i + 1];
      for (int64_t j = 0; j < d; ++j) o[i * d + j] *= f;
    }
    // Intra-chunk scores with the decay mask.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, d, 1.0f, q.data(), d, k.data(),
                d, 0.0f, a.data(), c);
    for (int64_t i = 0; i < len; ++i) {
      float* row = a.data() + i * c;
      for (int64_t j = 0; j <= i; ++j) row[j] *= pw[i - j];
      for (int64_t j = i + 1; j < len; ++j) row[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, d, len, 1.0f, a.data(), c, v.data(),
                d, 1.0f, o.data(), d);
    // S <- e^{g L} S + sum_j e^{g (L-1-j)} k_j v_j^T.
    const float carry = pw[len];
    for (int64_t i = 0; i < d * d; ++i) state[i] *= carry;
    for (int64_t j = 0; j < len; ++j) {
      const float f = pw[len - 1 - j];
      for (int64_t x = 0; x < d; ++x) kd[j * d + x] = k[j * d + x] * f;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, len, 1.0f, kd.data(), d, v.data(), d,
                1.0f, state, d);
    const int64_t out_ld = p.heads * d;
    for (int64_t i = 0; i < len; ++i) {
      float* dst = p.out + (c0 + i) * out_ld + h * d;
      for (int64_t j = 0; j < d; ++j) dst[j] = p.scale * o[i * d + j];
    }
  }
}

void LinearDecodeHead(const LinearDecodeParams& p, int64_t b, int64_t h) {
  const int64_t d = p.head_dim;
  float* state = p.states[b] + h * d * d;
  const float* q = p.q + b * p.ld + h * d;
  const float* k = p.k + b * p.ld + h * d;
  const float* v = p.v + b * p.ld + h * d;
  const float lambda = std::exp(p.log_decay[h]);
  float o[512];
  std::fill_n(o, d, 0.0f);
  for (int64_t x = 0; x < d; ++x) {
    float* row = state + x * d;
    const float kx = k[x];
    const float qx = q[x];
    for (int64_t j = 0; j < d; ++j) {
      row[j] = lambda * row[j] + kx * v[j];
      o[j] += qx * row[j];
    }
  }
  float* dst = p.out + b * p.heads * d + h * d;
  for (int64_t j = 0; j < d; ++j) dst[j] = p.scale * o[j];
}

namespace {

constexpr int kLanes = 16;

// max(x[0..n)), n > 0; lane-parallel so it vectorises without -ffast-math.
float MaxOf(const float* x, int64_t n) {
  float lanes[kLanes];
  std::fill_n(lanes, kLanes, -std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = x[j + l] > lanes[l] ? x[j + l] : lanes[l];
  }
  float m = -std::numeric_limits<float>::infinity();
  for (; j < n; ++j) m = std::max(m, x[j]);
  for (int l = 0; l < kLanes; ++l) m = std::max(m, lanes[l]);
  return m;
}

// x[j] = exp(x[j] - shift) for j < n; returns their sum (lane-parallel, as MaxOf).
float ExpShiftSum(float* x, int64_t n, float shift) {
  float lanes[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      x[j + l] = FastExpNonPositive(x[j + l] - shift);
      lanes[l] += x[j + l];
    }
  }
  float sum = 0.0f;
  for (; j < n; ++j) {
    x[j] = FastExpNonPositive(x[j] - shift);
    sum += x[j];
  }
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

}  // namespace

void StoreKv(const SoftmaxAttentionParams& p, int64_t g) {
  const int64_t d = p.head_dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const float* k = p.k + t * p.ld + g * d;
    const float* v = p.v + t * p.ld + g * d;
    uint16_t* kc = p.k_cache + (g * p.capacity + p.past + t) * d;
    uint16_t* vc = p.v_cache + (g * p.capacity + p.past + t) * d;
    for (int64_t j = 0; j < d; ++j) {
      kc[j] = FloatToBf16(k[j]);
      vc[j] = FloatToBf16(v[j]);
    }
  }
}

void SoftmaxAttentionBlock(const SoftmaxAttentionParams& p, int64_t g, int64_t q_begin,
                           int64_t q_end) {
  constexpr int64_t kKeyBlock = 512;
  const int64_t d = p.head_dim;
  const int64_t group = p.heads / p.kv_heads;
  const int64_t rows = (q_end - q_begin) * group;
  std::vector<float> q(rows * d), o(rows * d, 0.0f), s(rows * kKeyBlock);
  std::vector<float> kf(kKeyBlock * d), vf(kKeyBlock * d);
  std::vector<float> m(rows, -std::numeric_limits<float>::infinity()), l(rows, 0.0f);
  for (int64_t t = q_begin; t < q_end; ++t) {
    for (int64_t j = 0; j < group; ++j) {
      const int64_t r = (t - q_begin) * group + j;
      std::copy_n(p.q + t * p.ld + (g * group + j) * d, d, q.data() + r * d);
    }
  }
  const int64_t kv_end = p.past + q_end;
  const uint16_t* kc = p.k_cache + g * p.capacity * d;
  const uint16_t* vc = p.v_cache + g * p.capacity * d;
  for (int64_t k0 = 0; k0 < kv_end; k0 += kKeyBlock) {
    const int64_t kn = std::min(kKeyBlock, kv_end - k0);
    for (int64_t i = 0; i < kn * d; ++i) {
      kf[i] = Bf16ToFloat(kc[k0 * d + i]);
      vf[i] = Bf16ToFloat(vc[k0 * d + i]);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kn, d, p.scale, q.data(), d,
                kf.data(), d, 0.0f, s.data(), kKeyBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t limit = p.past + q_begin + r / group;  // last visible key position
      float* srow = s.data() + r * kKeyBlock;
      const int64_t visible = std::min(kn, limit - k0 + 1);
      if (visible <= 0) {
        std::fill_n(srow, kn, 0.0f);
        continue;
      }
      const float m_new = std::max(m[r], MaxOf(srow, visible));
      const float corr = std::exp(m[r] - m_new);
      const float sum = ExpShiftSum(srow, visible, m_new);
      for (int64_t j = std::max<int64_t>(visible, 0); j < kn; ++j) srow[j] = 0.0f;
      l[r] = l[r] * corr + sum;
      m[r] = m_new;
      float* orow = o.data() + r * d;
      for (int64_t x = 0; x < d; ++x) orow[x] *= corr;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, kn, 1.0f, s.data(), kKeyBlock,
                vf.data(), d, 1.0f, o.data(), d);
  }
  const int64_t out_ld = p.heads * d;
  for (int64_t t = q_begin; t < q_end; ++t) {
    for (int64_t j = 0; j < group; ++j) {
      const int64_t r = (t - q_begin) * group + j;
      float* dst = p.out + t * out_ld + (g * group + j) * d;
      const float inv = 1.0f / l[r];
      for (int64_t x = 0; x < d; ++x) dst[x] = o[r * d + x] * inv;
    }
  }
}

namespace {

// 16 floats: one AVX-512 register, two AVX2 ones (GCC/Clang vector extensions, so the code
// stays portable; -march picks the instructions).
constexpr int64_t kVec = 16;
using F16 = float __attribute__((vector_size(64)));
using F8 = float __attribute__((vector_size(32)));
using F4 = float __attribute__((vector_size(16)));
using U32x16 = uint32_t __attribute__((vector_size(64)));
using U16x16 = uint16_t __attribute__((vector_size(32)));

F16 Broadcast(float x) { return F16{} + x; }

float HorizontalSum(F16 v) {
  const F8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const F4 b =
      __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// Row `row` of d bf16 values widened to `chunks` fp32 vectors, zero past d.
void WidenRow(const uint16_t* row, int64_t d, int64_t chunks, F16* out) {
  for (int64_t c = 0; c < chunks; ++c) {
    if ((c + 1) * kVec <= d) {
      U16x16 h;
      std::memcpy(&h, row + c * kVec, sizeof(h));
      const U32x16 w = __builtin_convertvector(h, U32x16) << 16;
      std::memcpy(&out[c], &w, sizeof(w));
    } else {
      float tail[kVec] = {};
      for (int64_t x = c * kVec; x < d; ++x) tail[x - c * kVec] = Bf16ToFloat(row[x]);
      std::memcpy(&out[c], tail, sizeof(tail));
    }
  }
}

}  // namespace

void SoftmaxAttentionQuery(const SoftmaxAttentionParams& p, int64_t g, int64_t t) {
  constexpr int64_t kKeyBlock = 256;  // keys per online-softmax update
  constexpr int64_t kTile = 32;       // keys widened to fp32 at a time (stays in L1)
  const int64_t d = p.head_dim;
  const int64_t chunks = (d + kVec - 1) / kVec;
  const int64_t group = p.heads / p.kv_heads;
  // Query rows (scaled) and output accumulators as vectors, zero past d.
  std::vector<F16> q(group * chunks), o(group * chunks, F16{}), tile(kTile * chunks);
  std::vector<float> s(group * kKeyBlock);
  std::vector<float> m(group, -std::numeric_limits<float>::infinity()), l(group, 0.0f);
  std::vector<float> row(chunks * kVec, 0.0f);  // one query or output row, padded
  for (int64_t r = 0; r < group; ++r) {
    const float* src = p.q + t * p.ld + (g * group + r) * d;
    for (int64_t x = 0; x < d; ++x) row[x] = src[x] * p.scale;
    std::memcpy(&q[r * chunks], row.data(), row.size() * sizeof(float));
  }
  const int64_t visible = p.past + t + 1;
  const uint16_t* kc = p.k_cache + g * p.capacity * d;
  const uint16_t* vc = p.v_cache + g * p.capacity * d;
  for (int64_t k0 = 0; k0 < visible; k0 += kKeyBlock) {
    const int64_t kn = std::min(kKeyBlock, visible - k0);
    // Scores, four keys at a time against each query row: no per-key horizontal sum chain.
    for (int64_t j0 = 0; j0 < kn; j0 += kTile) {
      const int64_t n = std::min(kTile, kn - j0);
      for (int64_t j = 0; j < n; ++j)
        WidenRow(kc + (k0 + j0 + j) * d, d, chunks, &tile[j * chunks]);
      for (int64_t r = 0; r < group; ++r) {
        const F16* qr = q.data() + r * chunks;
        float* sr = s.data() + r * kKeyBlock + j0;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
          const F16* k = tile.data() + j * chunks;
          F16 a0{}, a1{}, a2{}, a3{};
          for (int64_t c = 0; c < chunks; ++c) {
            a0 += qr[c] * k[c];
            a1 += qr[c] * k[chunks + c];
            a2 += qr[c] * k[2 * chunks + c];
            a3 += qr[c] * k[3 * chunks + c];
          }
          sr[j] = HorizontalSum(a0);
          sr[j + 1] = HorizontalSum(a1);
          sr[j + 2] = HorizontalSum(a2);
          sr[j + 3] = HorizontalSum(a3);
        }
        for (; j < n; ++j) {
          F16 a{};
          for (int64_t c = 0; c < chunks; ++c) a += qr[c] * tile[j * chunks + c];
          sr[j] = HorizontalSum(a);
        }
      }
    }
    for (int64_t r = 0; r < group; ++r) {
      float* sr = s.data() + r * kKeyBlock;
      const float m_new = std::max(m[r], MaxOf(sr, kn));
      const F16 corr = Broadcast(std::exp(m[r] - m_new));
      l[r] = l[r] * corr[0] + ExpShiftSum(sr, kn, m_new);
      m[r] = m_new;
      for (int64_t c = 0; c < chunks; ++c) o[r * chunks + c] *= corr;
    }
    // Values: each row's accumulators stay in registers, four vectors at a time, over a tile.
    for (int64_t j0 = 0; j0 < kn; j0 += kTile) {
      const int64_t n = std::min(kTile, kn - j0);
      for (int64_t j = 0; j < n; ++j)
        WidenRow(vc + (k0 + j0 + j) * d, d, chunks, &tile[j * chunks]);
      for (int64_t r = 0; r < group; ++r) {
        const float* sr = s.data() + r * kKeyBlock + j0;
        F16* orow = o.data() + r * chunks;
        int64_t c = 0;
        for (; c + 4 <= chunks; c += 4) {
          F16 o0 = orow[c], o1 = orow[c + 1], o2 = orow[c + 2], o3 = orow[c + 3];
          for (int64_t j = 0; j < n; ++j) {
            const F16 w = Broadcast(sr[j]);
            const F16* v = tile.data() + j * chunks + c;
            o0 += w * v[0];
            o1 += w * v[1];
            o2 += w * v[2];
            o3 += w * v[3];
          }
          orow[c] = o0;
          orow[c + 1] = o1;
          orow[c + 2] = o2;
          orow[c + 3] = o3;
        }
        for (; c < chunks; ++c) {
          F16 acc = orow[c];
          for (int64_t j = 0; j < n; ++j) acc += Broadcast(sr[j]) * tile[j * chunks + c];
          orow[c] = acc;
        }
      }
    }
  }
  float* dst = p.out + t * p.heads * d + g * group * d;
  for (int64_t r = 0; r < group; ++r) {
    const float inv = 1.0f / l[r];
    std::memcpy(row.data(), &o[r * chunks], row.size() * sizeof(float));
    for (int64_t x = 0; x < d; ++x) dst[r * d + x] = row[x] * inv;
  }
}

void MoeRouteRows(const MoeRouteParams& p, int64_t begin, int64_t end) {
  const int64_t e = p.experts;
  const int64_t per_group = e / p.groups;
  std::vector<float> prob(e), score(e), group_score(p.groups);
  std::vector<int64_t> order(std::max(e, p.groups));
  for (int64_t t = begin; t < end; ++t) {
    const float* z = p.logits + t * e;
    for (int64_t i = 0; i < e; ++i) {
      prob[i] = 1.0f / (1.0f + std::exp(-z[i]));
      score[i] = prob[i] + (p.bias != nullptr ? p.bias[i] : 0.0f);
    }
    for (int64_t grp = 0; grp < p.groups; ++grp) {
      float best = -std::numeric_limits<float>::infinity();
      float second = -std::numeric_limits<float>::infinity();
      for (int64_t i = grp * per_group; i < (grp + 1) * per_group; ++i) {
        if (score[i] > best) {
          second = best;
          best = score[i];
        } else if (score[i] > second) {
          second = score[i];
        }
      }
      group_score[grp] = per_group >= 2 ? best + second : best;
    }
    std::iota(order.begin(), order.begin() + p.groups, 0);
    std::stable_sort(order.begin(), order.begin() + p.groups,
                     [&](int64_t a, int64_t b) { return group_score[a] > group_score[b]; });
    std::vector<bool> allowed(p.groups, false);
    for (int64_t i = 0; i < p.top_groups; ++i) allowed[order[i]] = true;
    std::vector<int64_t> candidates;
    candidates.reserve(e);
    for (int64_t i = 0; i < e; ++i) {
      if (allowed[i / per_group]) candidates.push_back(i);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    float sum = 0.0f;
    for (int64_t k = 0; k < p.top_k; ++k) sum += prob[candidates[k]];
    for (int64_t k = 0; k < p.top_k; ++k) {
      const int64_t id = candidates[k];
      p.expert_ids[t * p.top_k + k] = static_cast<int32_t>(id);
      p.weights[t * p.top_k + k] = prob[id] / (sum + 1e-20f) * p.routed_scaling;
    }
  }
}

int32_t SampleRow(const float* logits, int64_t vocab, const SamplingParams& params) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  if (params.temperature <= 0.0f || params.top_k == 1) return static_cast<int32_t>(best);
  const double inv_t = 1.0 / params.temperature;
  const double max_logit = logits[best];
  std::vector<std::pair<double, int32_t>> cand;
  cand.reserve(vocab);
  const double min_keep = params.min_p > 0.0f ? static_cast<double>(params.min_p) : 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double w = std::exp((logits[i] - max_logit) * inv_t);
    if (w >= min_keep) cand.emplace_back(w, static_cast<int32_t>(i));
  }
  // No candidate: every weight is NaN (a row of -inf, or +inf/NaN logits); keep the argmax.
  if (cand.empty()) return static_cast<int32_t>(best);
  auto by_weight = [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < cand.size()) {
    std::partial_sort(cand.begin(), cand.begin() + params.top_k, cand.end(), by_weight);
    cand.resize(params.top_k);
  } else {
    std::sort(cand.begin(), cand.end(), by_weight);
  }
  double total = 0.0;
  for (const auto& c : cand) total += c.first;
  if (params.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t keep = cand.size();
    for (size_t i = 0; i < cand.size(); ++i) {
      cumulative += cand[i].first / total;
      if (cumulative >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
    cand.resize(keep);
    total = 0.0;
    for (const auto& c : cand) total += c.first;
  }
  const double target = SampleUniform(params.seed, params.position) * total;
  double cumulative = 0.0;
  for (const auto& c : cand) {
    cumulative += c.first;
    if (target < cumulative) return c.second;
  }
  return cand.back().second;
}

}  // namespace ringserve::kernels::cpu
