// Every Backend op of the CUDA backend against the CPU backend on random inputs (the ggml
// test-backend-ops approach): each case builds the same inputs on each backend, runs the op and
// reads back every output; outputs are compared by their largest absolute difference relative to
// the largest CPU value, with a tolerance per case and per GPU precision mode.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_backend.h"

namespace ringserve::kernels {
namespace {

using Tensors = std::vector<std::pair<std::string, std::vector<float>>>;
// Runs one op on a backend with inputs that depend only on the case, returns its outputs.
using OpCase = std::function<Tensors(Backend*)>;

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed, float amp) {
  std::vector<uint16_t> v(n);
  const std::vector<float> f = Random(n, seed, -amp, amp);
  for (size_t i = 0; i < n; ++i) v[i] = base::FloatToBf16(f[i]);
  return v;
}

// Backend memory holding a copy of host data, read back on demand.
class Mem {
 public:
  template <typename T>
  Mem(Backend* be, const std::vector<T>& host) : be_(be), buf_(nullptr, nullptr) {
    bytes_ = std::max<size_t>(1, host.size() * sizeof(T));
    auto b = be->Allocate(bytes_);
    EXPECT_TRUE(b.ok()) << b.status();
    buf_ = std::move(*b);
    if (!host.empty()) be->CopyToDevice(buf_.get(), host.data(), host.size() * sizeof(T));
  }
  Mem(Backend* be, size_t bytes) : Mem(be, std::vector<char>(bytes, 0)) {}

  template <typename T>
  T* as() const {
    return static_cast<T*>(buf_.get());
  }
  std::vector<float> ReadFloats(size_t n) const {
    std::vector<float> out(n);
    be_->CopyToHost(out.data(), buf_.get(), n * sizeof(float));
    const absl::Status s = be_->Synchronize();
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }
  template <typename T>
  std::vector<float> ReadAsFloats(size_t n) const {
    std::vector<T> raw(n);
    be_->CopyToHost(raw.data(), buf_.get(), n * sizeof(T));
    const absl::Status s = be_->Synchronize();
    EXPECT_TRUE(s.ok()) << s;
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(raw[i]);
    return out;
  }
  std::vector<float> ReadBf16(size_t n) const {
    std::vector<uint16_t> raw(n);
    be_->CopyToHost(raw.data(), buf_.get(), n * sizeof(uint16_t));
    const absl::Status s = be_->Synchronize();
    EXPECT_TRUE(s.ok()) << s;
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = base::Bf16ToFloat(raw[i]);
    return out;
  }

 private:
  Backend* be_;
  Buffer buf_;
  size_t bytes_ = 0;
};

Weight UploadBf16(Backend* be, const std::vector<uint16_t>& data, int64_t rows, int64_t cols) {
  const base::TensorView view{"w",
                              base::DType::kBF16,
                              {rows, cols},
                              reinterpret_cast<const uint8_t*>(data.data()),
                              data.size() * 2};
  auto w = be->UploadWeight(view);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *w : Weight{};
}

// Largest |got - want| over the largest |want|; infinity on NaN or a size mismatch.
double RelDiff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 1e-12;
  double diff = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return diff / scale;
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    cpu_ = std::make_unique<CpuBackend>(4);
    auto fast = CudaBackend::Create({});
    ASSERT_TRUE(fast.ok()) << fast.status();
    fast_ = std::move(*fast);
    CudaBackendOptions split_options;
    split_options.split_bf16 = true;
    auto split = CudaBackend::Create(split_options);
    ASSERT_TRUE(split.ok()) << split.status();
    split_ = std::move(*split);
  }

  // Runs `op` on the CPU and on both GPU modes and compares every output.
  void Check(const std::string& name, const OpCase& op, double tol_fast, double tol_split) {
    SCOPED_TRACE(name);
    const Tensors want = op(cpu_.get());
    for (auto [gpu, tol] : {std::pair<CudaBackend*, double>{fast_.get(), tol_fast},
                            std::pair<CudaBackend*, double>{split_.get(), tol_split}}) {
      const Tensors got = op(gpu);
      const absl::Status s = gpu->Synchronize();
      EXPECT_TRUE(s.ok()) << s;
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const double d = RelDiff(got[i].second, want[i].second);
        EXPECT_LE(d, tol) << name << " output " << want[i].first
                          << (gpu->options().split_bf16 ? " (split bf16)" : " (bf16)");
      }
    }
  }

  std::unique_ptr<CpuBackend> cpu_;
  std::unique_ptr<CudaBackend> fast_;
  std::unique_ptr<CudaBackend> split_;
};

TEST_F(CudaOpsTest, Embed) {
  const int64_t vocab = 300, cols = 96;
  const std::vector<uint16_t> table = RandomBf16(vocab * cols, 1, 2.0f);
  const std::vector<int32_t> ids = {0, 299, 5, 5, 123, 42, 7};
  Check(
      "embed",
      [&](Backend* be) -> Tensors {
        const Weight w = UploadBf16(be, table, vocab, cols);
        Mem idm(be, ids), out(be, ids.size() * cols * sizeof(float));
        be->Embed(w, idm.as<int32_t>(), static_cast<int64_t>(ids.size()), out.as<float>());
        return {{"out", out.ReadFloats(ids.size() * cols)}};
      },
      0.0, 0.0);
}

TEST_F(CudaOpsTest, Gemm) {
  struct Shape {
    int64_t m, n, k, ldx, ldy;
    bool accumulate;
  };
  // Skinny kernel (m <= 8), cuBLAS (m > 8), odd n, padded strides, accumulation.
  const Shape shapes[] = {{1, 256, 512, 512, 256, false},     {3, 100, 128, 136, 120, true},
                          {8, 1000, 1024, 1024, 1000, false}, {9, 64, 256, 260, 64, true},
                          {64, 384, 2048, 2048, 384, false},  {300, 130, 96, 100, 140, true},
                          {5, 33, 20, 20, 33, false}};
  for (const Shape& s : shapes) {
    const std::vector<uint16_t> w = RandomBf16(s.n * s.k, 11, 0.1f);
    const std::vector<float> x = Random(s.m * s.ldx, 12);
    const std::vector<float> y0 = Random(s.m * s.ldy, 13);
    const bool skinny = s.m <= 8 && s.k % 8 == 0;
    Check(
        "gemm m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k),
        [&](Backend* be) -> Tensors {
          const Weight wt = UploadBf16(be, w, s.n, s.k);
          Mem xm(be, x), ym(be, y0);
          be->Gemm({xm.as<float>(), s.m, s.ldx, &wt, ym.as<float>(), s.ldy, s.accumulate});
          return {{"y", ym.ReadFloats(s.m * s.ldy)}};
        },
        skinny ? 1e-5 : 2e-2, skinny ? 1e-5 : 2e-4);
  }
}

TEST_F(CudaOpsTest, RmsNorm) {
  struct Shape {
    int64_t rows, cols, groups, ldx, ldy;
    bool in_place;
  };
  const Shape shapes[] = {{7, 2048, 1, 2048, 2048, false},
                          {5, 512, 4, 600, 520, false},
                          {9, 256, 8, 300, 300, true},
                          {3, 4096, 2, 4096, 4096, true}};
  for (const Shape& s : shapes) {
    const std::vector<float> x = Random(s.rows * s.ldx, 21, -3.0f, 3.0f);
    const std::vector<float> w = Random(s.cols, 22, 0.5f, 1.5f);
    Check(
        "rmsnorm cols=" + std::to_string(s.cols) + " groups=" + std::to_string(s.groups),
        [&](Backend* be) -> Tensors {
          Mem xm(be, x), wm(be, w), ym(be, std::vector<float>(s.rows * s.ldy, 0.0f));
          float* y = s.in_place ? xm.as<float>() : ym.as<float>();
          const int64_t ldy = s.in_place ? s.ldx : s.ldy;
          be->RmsNorm(
              {xm.as<float>(), s.ldx, y, ldy, wm.as<float>(), s.rows, s.cols, s.groups, 1e-6f});
          return {
              {"y", s.in_place ? xm.ReadFloats(s.rows * s.ldx) : ym.ReadFloats(s.rows * s.ldy)}};
        },
        2e-6, 2e-6);
  }
}

TEST_F(CudaOpsTest, Rope) {
  const int64_t rows = 37, heads = 3, head_dim = 32, ld = 110;
  const std::vector<float> x = Random(rows * ld, 31);
  std::vector<int32_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = static_cast<int32_t>(r * 3001 % 131072);
  for (int64_t rotary : {16, 32}) {
    Check(
        "rope rotary=" + std::to_string(rotary),
        [&](Backend* be) -> Tensors {
          Mem xm(be, x), pm(be, pos);
          be->Rope({xm.as<float>(), ld, rows, heads, head_dim, rotary, pm.as<int32_t>(), 1e6});
          return {{"x", xm.ReadFloats(rows * ld)}};
        },
        1e-6, 1e-6);
  }
}

TEST_F(CudaOpsTest, Elementwise) {
  const int64_t rows = 13, inter = 300;
  const std::vector<float> gu = Random(rows * 2 * inter, 41, -6.0f, 6.0f);
  Check(
      "silu_mul",
      [&](Backend* be) -> Tensors {
        Mem g(be, gu), out(be, rows * inter * sizeof(float));
        be->SiluMul(g.as<float>(), rows, inter, out.as<float>());
        return {{"out", out.ReadFloats(rows * inter)}};
      },
      1e-6, 1e-6);
  const std::vector<float> x = Random(rows * 260, 42), g = Random(rows * 280, 43, -8.0f, 8.0f);
  Check(
      "sigmoid_mul",
      [&](Backend* be) -> Tensors {
        Mem xm(be, x), gm(be, g);
        be->SigmoidMul(xm.as<float>(), 260, gm.as<float>(), 280, rows, 250);
        return {{"x", xm.ReadFloats(rows * 260)}};
      },
      1e-6, 1e-6);
  Check(
      "add_fill",
      [&](Backend* be) -> Tensors {
        Mem a(be, x), b(be, g), c(be, 1000 * sizeof(float));
        be->Add(a.as<float>(), b.as<float>(), rows * 260);
        be->Fill(c.as<float>(), 0.25f, 1000);
        be->CopyDeviceToDevice(c.as<float>() + 10, a.as<float>(), 20 * sizeof(float));
        return {{"y", a.ReadFloats(rows * 260)}, {"fill", c.ReadFloats(1000)}};
      },
      0.0, 0.0);
}

// Per-head decays like the model's: strong for head 0, close to 1 for the last.
std::vector<float> Decays(int64_t heads) {
  std::vector<float> g(heads);
  for (int64_t h = 0; h < heads; ++h) g[h] = -std::pow(2.0f, -8.0f * (h + 1) / heads);
  return g;
}

TEST_F(CudaOpsTest, LinearAttention) {
  struct Shape {
    int64_t tokens, heads, head_dim;
  };
  // One chunk, partial chunks, one and many segments.
  const Shape shapes[] = {{1, 4, 32},     {63, 4, 32},   {64, 2, 64},    {65, 16, 128},
                          {200, 16, 128}, {3000, 4, 32}, {1500, 16, 128}};
  for (const Shape& s : shapes) {
    const int64_t inner = s.heads * s.head_dim;
    const int64_t ld = 3 * inner + 8;
    const std::vector<float> qkv = Random(s.tokens * ld, 51);
    const std::vector<float> state0 = Random(inner * s.head_dim, 52, -0.5f, 0.5f);
    const std::vector<float> decay = Decays(s.heads);
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    Check(
        "linear_attention T=" + std::to_string(s.tokens) + " H=" + std::to_string(s.heads) +
            " D=" + std::to_string(s.head_dim),
        [&](Backend* be) -> Tensors {
          Mem in(be, qkv), st(be, state0), dm(be, decay), out(be, s.tokens * inner * sizeof(float));
          const float* q = in.as<float>();
          be->LinearAttention({q, q + inner, q + 2 * inner, ld, out.as<float>(), st.as<float>(),
                               dm.as<float>(), s.tokens, s.heads, s.head_dim, scale});
          return {{"out", out.ReadFloats(s.tokens * inner)},
                  {"state", st.ReadFloats(inner * s.head_dim)}};
        },
        2e-5, 2e-5);
  }
}

TEST_F(CudaOpsTest, LinearAttentionDecode) {
  for (int64_t head_dim : {32, 128}) {
    const int64_t batch = 5, heads = 4, inner = heads * head_dim, ld = 3 * inner;
    const std::vector<float> qkv = Random(batch * ld, 61);
    const std::vector<float> states0 = Random(batch * inner * head_dim, 62, -0.5f, 0.5f);
    const std::vector<float> decay = Decays(heads);
    Check(
        "linear_decode D=" + std::to_string(head_dim),
        [&](Backend* be) -> Tensors {
          Mem in(be, qkv), st(be, states0), dm(be, decay), out(be, batch * inner * sizeof(float));
          std::vector<float*> ptrs;
          // Sequences in reverse memory order: the pointer table (backend memory), not the
          // layout, selects each state.
          for (int64_t b = 0; b < batch; ++b)
            ptrs.push_back(st.as<float>() + (batch - 1 - b) * inner * head_dim);
          Mem pm(be, ptrs);
          const float* q = in.as<float>();
          be->LinearAttentionDecode({q, q + inner, q + 2 * inner, ld, out.as<float>(),
                                     pm.as<float*>(), dm.as<float>(), batch, heads, head_dim,
                                     0.125f});
          return {{"out", out.ReadFloats(batch * inner)},
                  {"states", st.ReadFloats(batch * inner * head_dim)}};
        },
        1e-5, 1e-5);
  }
}

TEST_F(CudaOpsTest, SoftmaxAttention) {
  struct Shape {
    int64_t tokens, past, heads, kv_heads, head_dim;
  };
  const Shape shapes[] = {
      // Decode path (tokens x group <= 32): one token, several tokens, long contexts.
      {1, 0, 16, 4, 128},
      {1, 5, 16, 4, 128},
      {1, 1000, 32, 4, 128},
      {3, 300, 16, 4, 128},
      {1, 5000, 16, 4, 128},
      {4, 20, 4, 2, 32},
      // Prefill tiles.
      {100, 0, 16, 4, 128},
      {300, 70, 16, 4, 128},
      {37, 11, 8, 8, 64},
      {129, 0, 4, 2, 32},
      {70, 500, 32, 4, 128}};
  for (const Shape& s : shapes) {
    const int64_t capacity = s.past + s.tokens + 9;
    const int64_t ld = (s.heads + 2 * s.kv_heads) * s.head_dim;
    const std::vector<float> qkv = Random(s.tokens * ld, 71, -2.0f, 2.0f);
    const std::vector<uint16_t> cache0 = RandomBf16(s.kv_heads * capacity * s.head_dim, 72, 2.0f);
    const bool decode = s.tokens * (s.heads / s.kv_heads) <= 32;
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    Check(
        "softmax_attention T=" + std::to_string(s.tokens) + " past=" + std::to_string(s.past) +
            " H=" + std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) +
            " D=" + std::to_string(s.head_dim),
        [&](Backend* be) -> Tensors {
          Mem in(be, qkv), kc(be, cache0), vc(be, cache0),
              out(be, s.tokens * s.heads * s.head_dim * sizeof(float));
          const float* q = in.as<float>();
          be->SoftmaxAttention({q, q + s.heads * s.head_dim,
                                q + (s.heads + s.kv_heads) * s.head_dim, ld, out.as<float>(),
                                kc.as<uint16_t>(), vc.as<uint16_t>(), capacity, s.past, s.tokens,
                                s.heads, s.kv_heads, s.head_dim, scale});
          const size_t cache = s.kv_heads * capacity * s.head_dim;
          return {{"out", out.ReadFloats(s.tokens * s.heads * s.head_dim)},
                  {"k_cache", kc.ReadBf16(cache)},
                  {"v_cache", vc.ReadBf16(cache)}};
        },
        decode ? 2e-5 : 2e-2, decode ? 2e-5 : 2e-4);
  }
}

// A batched softmax decode step: inputs and the sequences' caches, laid out in one arena in
// reverse order so that the KvCacheRef table, not the layout, selects each cache.
struct DecodeCase {
  int64_t batch = 0, heads = 0, kv_heads = 0, head_dim = 0, ld = 0;
  std::vector<int64_t> pasts;
  std::vector<int64_t> capacities;
  std::vector<int64_t> offsets;  // of each sequence's cache in the arena, elements
  int64_t arena = 0;
  std::vector<float> qkv;        // [batch, ld]: q, k, v
  std::vector<uint16_t> cache0;  // [arena], bf16
};

DecodeCase MakeDecodeCase(int64_t batch, int64_t heads, int64_t kv_heads, int64_t head_dim,
                          std::vector<int64_t> pasts, std::vector<int64_t> capacities,
                          uint32_t seed) {
  DecodeCase c;
  c.batch = batch;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.ld = (heads + 2 * kv_heads) * head_dim + 8;
  c.pasts = std::move(pasts);
  c.capacities = std::move(capacities);
  c.offsets.resize(batch);
  for (int64_t b = batch - 1; b >= 0; --b) {
    c.offsets[b] = c.arena;
    c.arena += kv_heads * c.capacities[b] * head_dim;
  }
  c.qkv = Random(batch * c.ld, seed, -2.0f, 2.0f);
  c.cache0 = RandomBf16(c.arena, seed + 1, 2.0f);
  return c;
}

// Pasts of test sequence i: 0, small, and every 16th several thousand (none a multiple of 256).
int64_t DecodePast(int64_t i) { return i % 16 == 2 ? 4099 + 3 * i : (i * 131) % 600; }

// Backend memory of a DecodeCase.
struct DecodeMem {
  DecodeMem(Backend* be, const DecodeCase& c)
      : be(be),
        in(be, c.qkv),
        k(be, c.cache0),
        v(be, c.cache0),
        out(be, c.batch * c.heads * c.head_dim * sizeof(float)),
        seqs(be, Refs(c)) {}

  std::vector<KvCacheRef> Refs(const DecodeCase& c) const {
    std::vector<KvCacheRef> refs;
    for (int64_t b = 0; b < c.batch; ++b) {
      refs.push_back({k.as<uint16_t>() + c.offsets[b], v.as<uint16_t>() + c.offsets[b],
                      c.capacities[b], c.pasts[b]});
    }
    return refs;
  }
  // Overwrites the inputs, caches and table with those of `c` (of the same sizes).
  void Load(const DecodeCase& c) {
    be->CopyToDevice(in.as<void>(), c.qkv.data(), c.qkv.size() * sizeof(float));
    be->CopyToDevice(k.as<void>(), c.cache0.data(), c.cache0.size() * sizeof(uint16_t));
    be->CopyToDevice(v.as<void>(), c.cache0.data(), c.cache0.size() * sizeof(uint16_t));
    const std::vector<KvCacheRef> refs = Refs(c);
    be->CopyToDevice(seqs.as<void>(), refs.data(), refs.size() * sizeof(KvCacheRef));
  }
  SoftmaxDecodeParams Params(const DecodeCase& c) const {
    const float* q = in.as<float>();
    return {q,
            q + c.heads * c.head_dim,
            q + (c.heads + c.kv_heads) * c.head_dim,
            c.ld,
            out.as<float>(),
            seqs.as<KvCacheRef>(),
            c.batch,
            c.heads,
            c.kv_heads,
            c.head_dim,
            1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  }
  Tensors Read(const DecodeCase& c) const {
    return {{"out", out.ReadFloats(c.batch * c.heads * c.head_dim)},
            {"k_cache", k.ReadBf16(c.arena)},
            {"v_cache", v.ReadBf16(c.arena)}};
  }

  Backend* be;
  Mem in, k, v, out, seqs;
};

TEST_F(CudaOpsTest, SoftmaxAttentionDecode) {
  struct Shape {
    int64_t batch, first, heads, kv_heads, head_dim;
  };
  // Sequence b has past DecodePast(first + b); groups 1, 4 and 8.
  const Shape shapes[] = {{1, 0, 8, 8, 64},    {1, 2, 32, 4, 128}, {3, 0, 8, 8, 128},
                          {17, 0, 16, 2, 128}, {17, 1, 16, 4, 64}, {64, 0, 8, 2, 64},
                          {64, 3, 16, 2, 128}};
  for (const Shape& s : shapes) {
    std::vector<int64_t> pasts, capacities;
    for (int64_t b = 0; b < s.batch; ++b) {
      pasts.push_back(DecodePast(s.first + b));
      capacities.push_back(pasts.back() + 1 + (b % 3) * 5);
    }
    const DecodeCase c =
        MakeDecodeCase(s.batch, s.heads, s.kv_heads, s.head_dim, pasts, capacities, 75);
    Check(
        "softmax_decode B=" + std::to_string(s.batch) + " first=" + std::to_string(s.first) +
            " H=" + std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) +
            " D=" + std::to_string(s.head_dim),
        [&](Backend* be) -> Tensors {
          DecodeMem m(be, c);
          be->SoftmaxAttentionDecode(m.Params(c));
          return m.Read(c);
        },
        2e-5, 2e-5);
  }
}

TEST_F(CudaOpsTest, MoeRoute) {
  struct Shape {
    int64_t tokens, experts, top_k, groups, top_groups;
    bool bias, ties;
  };
  const Shape shapes[] = {{50, 256, 8, 8, 4, true, false},
                          {33, 16, 4, 4, 2, true, false},
                          {20, 64, 6, 1, 1, false, false},
                          {17, 32, 4, 4, 2, false, true}};
  for (const Shape& s : shapes) {
    std::vector<float> logits = Random(s.tokens * s.experts, 81, -3.0f, 3.0f);
    if (s.ties) {
      // Equal scores within and across groups: the lower index must win.
      for (int64_t t = 0; t < s.tokens; ++t) {
        for (int64_t e = 0; e < s.experts; ++e)
          logits[t * s.experts + e] = static_cast<float>((e * 7) % 5);
      }
    }
    const std::vector<float> bias = Random(s.experts, 82, -0.01f, 0.01f);
    Check(
        "moe_route E=" + std::to_string(s.experts),
        [&](Backend* be) -> Tensors {
          Mem lm(be, logits), bm(be, bias), ids(be, s.tokens * s.top_k * 4),
              w(be, s.tokens * s.top_k * 4);
          be->MoeRoute({lm.as<float>(), s.bias ? bm.as<float>() : nullptr, ids.as<int32_t>(),
                        w.as<float>(), s.tokens, s.experts, s.top_k, s.groups, s.top_groups, 2.5f});
          return {{"ids", ids.ReadAsFloats<int32_t>(s.tokens * s.top_k)},
                  {"weights", w.ReadFloats(s.tokens * s.top_k)}};
        },
        1e-6, 1e-6);
  }
}

TEST_F(CudaOpsTest, MoeExperts) {
  const int64_t experts = 16, hidden = 128, inter = 64, top_k = 4;
  std::vector<std::vector<uint16_t>> gate_up, down;
  for (int64_t e = 0; e < experts; ++e) {
    gate_up.push_back(RandomBf16(2 * inter * hidden, 100 + e, 0.1f));
    down.push_back(RandomBf16(hidden * inter, 200 + e, 0.1f));
  }
  // Tokens on the device path (<= 64) and on the cuBLAS path.
  for (int64_t tokens : {1, 5, 64, 65, 300}) {
    const std::vector<float> x = Random(tokens * hidden, 91);
    const std::vector<float> y0 = Random(tokens * hidden, 92);
    const std::vector<float> logits = Random(tokens * experts, 93, -3.0f, 3.0f);
    std::vector<int32_t> ids(tokens * top_k);
    std::vector<float> weights(tokens * top_k);
    cpu::MoeRouteRows(
        {logits.data(), nullptr, ids.data(), weights.data(), tokens, experts, top_k, 4, 2, 2.5f}, 0,
        tokens);
    const bool on_device = tokens <= 64;
    Check(
        "moe_experts T=" + std::to_string(tokens),
        [&](Backend* be) -> Tensors {
          std::vector<Weight> gu, dn;
          for (int64_t e = 0; e < experts; ++e) {
            gu.push_back(UploadBf16(be, gate_up[e], 2 * inter, hidden));
            dn.push_back(UploadBf16(be, down[e], hidden, inter));
          }
          Mem xm(be, x), ym(be, y0), im(be, ids), wm(be, weights);
          be->MoeExperts({xm.as<float>(), ym.as<float>(), im.as<int32_t>(), wm.as<float>(), tokens,
                          hidden, top_k, &gu, &dn});
          return {{"y", ym.ReadFloats(tokens * hidden)}};
        },
        on_device ? 1e-5 : 2e-2, on_device ? 1e-5 : 2e-4);
  }
}

TEST_F(CudaOpsTest, Sample) {
  for (int64_t vocab : {5000, 157184}) {
    const int64_t rows = 9;
    std::vector<float> logits = Random(rows * vocab, 111, -4.0f, 4.0f);
    // Row 1 has tied maxima; row 2 a flat top where ties decide the candidate order; row 8 is
    // all -inf (no candidate: the argmax, index 0, like greedy).
    logits[1 * vocab + 10] = logits[1 * vocab + 20] = 9.0f;
    for (int64_t i = 0; i < 200; ++i) logits[2 * vocab + i * 3] = 9.5f;
    std::fill(logits.begin() + 8 * vocab, logits.begin() + 9 * vocab, -INFINITY);
    const SamplingParams kinds[rows] = {
        {.temperature = 0.0f},
        {.temperature = 0.0f},
        {.temperature = 1.0f, .top_k = 50, .seed = 5},
        {.temperature = 0.7f, .seed = 6},
        {.temperature = 1.0f, .top_p = 0.9f, .seed = 7},
        {.temperature = 1.3f, .top_k = 100, .top_p = 0.5f, .min_p = 0.01f, .seed = 8},
        {.temperature = 0.9f, .min_p = 0.2f, .seed = 9},
        {.temperature = 1.0f, .top_k = 1, .seed = 10},
        {.temperature = 0.8f, .top_p = 0.9f, .min_p = 0.05f, .seed = 11}};
    for (uint64_t position = 0; position < 12; ++position) {
      std::vector<SamplingParams> params(kinds, kinds + rows);
      for (auto& p : params) p.position = position;
      Check(
          "sample vocab=" + std::to_string(vocab) + " position=" + std::to_string(position),
          [&](Backend* be) -> Tensors {
            Mem lm(be, logits);
            std::vector<int32_t> ids(rows, -1);
            be->Sample(lm.as<float>(), rows, vocab, params.data(), ids.data());
            EXPECT_TRUE(be->Synchronize().ok());
            return {{"ids", std::vector<float>(ids.begin(), ids.end())}};
          },
          0.0, 0.0);
    }
  }
}

// The ops of the graph tests: y = fill + x, an embedding and a batched decode step.
struct GraphOps {
  GraphOps(Backend* be, const DecodeCase& c, int64_t n, const Weight& table, int64_t num_ids)
      : decode(be, c),
        x(be, n * sizeof(float)),
        y(be, n * sizeof(float)),
        ids(be, num_ids * sizeof(int32_t)),
        emb(be, num_ids * table.cols * sizeof(float)) {}

  void Run(Backend* be, const DecodeCase& c, int64_t n, const Weight& table, int64_t num_ids) {
    be->Fill(y.as<float>(), 1.5f, n);
    be->Add(y.as<float>(), x.as<float>(), n);
    be->Embed(table, ids.as<int32_t>(), num_ids, emb.as<float>());
    be->SoftmaxAttentionDecode(decode.Params(c));
  }

  DecodeMem decode;
  Mem x, y, ids, emb;
};

TEST_F(CudaOpsTest, GraphReplayMatchesEagerCalls) {
  const int64_t batch = 5, n = 1000, vocab = 64, cols = 32, num_ids = 6, capacity = 4300;
  // Rounds with other inputs, caches, lengths and token ids behind the same pointers.
  std::vector<DecodeCase> rounds;
  std::vector<std::vector<int32_t>> ids;
  for (int64_t round = 0; round < 3; ++round) {
    std::vector<int64_t> pasts;
    for (int64_t b = 0; b < batch; ++b) pasts.push_back(DecodePast(7 * round + b));
    rounds.push_back(MakeDecodeCase(batch, 16, 4, 128, pasts, std::vector<int64_t>(batch, capacity),
                                    static_cast<uint32_t>(300 + 10 * round)));
    std::vector<int32_t> round_ids;
    for (int64_t i = 0; i < num_ids; ++i)
      round_ids.push_back(static_cast<int32_t>((i * 13 + round * 7) % vocab));
    ids.push_back(round_ids);
  }
  CudaBackend* be = fast_.get();
  const Weight table = UploadBf16(be, RandomBf16(vocab * cols, 310, 1.0f), vocab, cols);
  GraphOps ops(be, rounds[0], n, table, num_ids);
  auto load = [&](int64_t round) {
    ops.decode.Load(rounds[round]);
    const std::vector<float> x = Random(n, static_cast<uint32_t>(320 + round));
    be->CopyToDevice(ops.x.as<void>(), x.data(), n * sizeof(float));
    be->CopyToDevice(ops.ids.as<void>(), ids[round].data(), num_ids * sizeof(int32_t));
  };
  auto read = [&](int64_t round) {
    Tensors t = ops.decode.Read(rounds[round]);
    t.push_back({"y", ops.y.ReadFloats(n)});
    t.push_back({"embed", ops.emb.ReadFloats(num_ids * cols)});
    return t;
  };

  // Eager warm-up sizes the scratch memory, then the capture records without running.
  load(0);
  ops.Run(be, rounds[0], n, table, num_ids);
  ASSERT_TRUE(be->Synchronize().ok());
  ASSERT_TRUE(be->BeginCapture().ok());
  ops.Run(be, rounds[0], n, table, num_ids);
  absl::StatusOr<std::unique_ptr<Graph>> graph = be->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();

  for (int64_t round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    load(round);
    const absl::Status replay = (*graph)->Replay();
    ASSERT_TRUE(replay.ok()) << replay;
    ASSERT_TRUE(be->Synchronize().ok());
    const Tensors replayed = read(round);
    load(round);
    ops.Run(be, rounds[round], n, table, num_ids);
    ASSERT_TRUE(be->Synchronize().ok());
    const Tensors eager = read(round);
    ASSERT_EQ(replayed.size(), eager.size());
    for (size_t i = 0; i < eager.size(); ++i) {
      EXPECT_EQ(RelDiff(replayed[i].second, eager[i].second), 0.0) << eager[i].first;
    }
  }
}

TEST_F(CudaOpsTest, CaptureFailsOnCallsThatCannotBeRecorded) {
  CudaBackend* be = fast_.get();
  Mem x(be, std::vector<float>(64, 1.0f));
  std::vector<float> host(64);
  ASSERT_TRUE(be->BeginCapture().ok());
  EXPECT_EQ(be->BeginCapture().code(), absl::StatusCode::kFailedPrecondition);
  be->Fill(x.as<float>(), 2.0f, 64);
  be->CopyToHost(host.data(), x.as<float>(), 64 * sizeof(float));
  EXPECT_EQ(be->Synchronize().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(be->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(be->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(be->Synchronize().ok());

  ASSERT_TRUE(be->BeginCapture().ok());
  EXPECT_EQ(be->Allocate(64).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(be->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);

  // A scratch slot first used inside the capture would have to be allocated there.
  const DecodeCase c = MakeDecodeCase(2, 8, 2, 64, {3, 9}, {16, 16}, 330);
  DecodeMem m(be, c);
  ASSERT_TRUE(be->Synchronize().ok());
  ASSERT_TRUE(be->BeginCapture().ok());
  be->SoftmaxAttentionDecode(m.Params(c));
  EXPECT_EQ(be->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);

  // The backend still works eagerly.
  be->Fill(x.as<float>(), 3.0f, 64);
  EXPECT_EQ(x.ReadFloats(64), std::vector<float>(64, 3.0f));
  EXPECT_TRUE(be->Synchronize().ok());
}

TEST_F(CudaOpsTest, ReplayFailsAfterScratchGrows) {
  CudaBackend* be = fast_.get();
  const DecodeCase small = MakeDecodeCase(2, 32, 4, 128, {3, 700}, {16, 710}, 340);
  DecodeMem sm(be, small);
  be->SoftmaxAttentionDecode(sm.Params(small));
  ASSERT_TRUE(be->Synchronize().ok());
  ASSERT_TRUE(be->BeginCapture().ok());
  be->SoftmaxAttentionDecode(sm.Params(small));
  absl::StatusOr<std::unique_ptr<Graph>> graph = be->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_TRUE((*graph)->Replay().ok());
  ASSERT_TRUE(be->Synchronize().ok());

  // 512 sequences need a far larger workspace in the same slot.
  const int64_t big_batch = 512;
  std::vector<int64_t> pasts;
  for (int64_t b = 0; b < big_batch; ++b) pasts.push_back(b % 3);
  const DecodeCase big =
      MakeDecodeCase(big_batch, 32, 4, 128, pasts, std::vector<int64_t>(big_batch, 4), 350);
  DecodeMem bm(be, big);
  be->SoftmaxAttentionDecode(bm.Params(big));
  ASSERT_TRUE(be->Synchronize().ok());
  EXPECT_EQ((*graph)->Replay().code(), absl::StatusCode::kFailedPrecondition);

  // Capturing again gives a graph that replays.
  ASSERT_TRUE(be->BeginCapture().ok());
  be->SoftmaxAttentionDecode(sm.Params(small));
  graph = be->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_TRUE((*graph)->Replay().ok());
  EXPECT_TRUE(be->Synchronize().ok());
}

TEST_F(CudaOpsTest, UnsupportedParametersAreReportedBySynchronize) {
  const std::vector<float> f32(16 * 16, 1.0f);
  const base::TensorView view{"w",
                              base::DType::kF32,
                              {16, 16},
                              reinterpret_cast<const uint8_t*>(f32.data()),
                              f32.size() * 4};
  auto w = fast_->UploadWeight(view);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->dtype, base::DType::kBF16);
  Weight wrong = *w;
  wrong.dtype = base::DType::kF32;
  Mem x(fast_.get(), f32), y(fast_.get(), f32);
  fast_->Gemm({x.as<float>(), 16, 16, &wrong, y.as<float>(), 16, false});
  const absl::Status s = fast_->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(fast_->Synchronize().ok());
  fast_->Gemm({x.as<float>(), 16, 16, &*w, y.as<float>(), 16, false});
  EXPECT_TRUE(fast_->Synchronize().ok());
}

TEST(CudaBackendTest, CreateFailsClearlyWithoutADevice) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto b = CudaBackend::Create({});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
}

}  // namespace
}  // namespace ringserve::kernels
