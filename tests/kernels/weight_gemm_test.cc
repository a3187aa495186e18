// GEMMs against weights as stored: bf16 weights (streamed for a few rows, widened panel by panel
// for many) give the fp32 GEMM of the widened weights up to summation order, on every instruction
// set this CPU runs (the narrower ones forced), for stacked weights too; Embed widens bf16 rows.
#include "kernels/cpu/weight_gemm.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace ringserve::kernels {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<uint16_t> RandomBf16(int64_t n, uint32_t seed) {
  std::vector<uint16_t> v;
  for (float x : Random(n, seed)) v.push_back(base::FloatToBf16(x));
  return v;
}

// Restores the best instruction set when a test ends.
class WeightGemmTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(cpu::SetIsa(cpu::BestIsa()).ok()); }

  static std::vector<cpu::Isa> Isas() {
    std::vector<cpu::Isa> out;
    for (cpu::Isa isa : {cpu::Isa::kPortable, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
      if (static_cast<int>(isa) <= static_cast<int>(cpu::BestIsa())) out.push_back(isa);
    }
    return out;
  }
};

struct Shape {
  int64_t m, n, k, ldx, ldy;
  bool accumulate;
};

TEST_F(WeightGemmTest, Bf16MatchesTheFp32GemmOfTheWidenedWeights) {
  // Streamed (m <= 64) and paneled rows, partial register tiles, k with and without a partial
  // chunk, padded strides, accumulation.
  const Shape shapes[] = {{1, 256, 512, 512, 256, false}, {3, 101, 128, 136, 120, true},
                          {4, 64, 1024, 1024, 64, false}, {5, 33, 20, 20, 33, false},
                          {16, 130, 100, 104, 130, true}, {64, 96, 256, 256, 96, false},
                          {65, 70, 96, 100, 80, true},    {200, 130, 1040, 1040, 130, false}};
  CpuBackend backend(2);
  for (cpu::Isa isa : Isas()) {
    ASSERT_TRUE(cpu::SetIsa(isa).ok());
    for (const Shape& s : shapes) {
      const std::string what = absl::StrCat(cpu::IsaName(isa), " m=", s.m, " n=", s.n, " k=", s.k);
      const std::vector<uint16_t> w = RandomBf16(s.n * s.k, 1);
      std::vector<float> wide(w.size());
      for (size_t i = 0; i < w.size(); ++i) wide[i] = base::Bf16ToFloat(w[i]);
      const std::vector<float> x = Random(s.m * s.ldx, 2);
      const std::vector<float> y0 = Random(s.m * s.ldy, 3);
      const Weight bf16{w.data(), s.n, s.k, base::DType::kBF16};
      const Weight f32{wide.data(), s.n, s.k, base::DType::kF32};
      std::vector<float> got = y0, want = y0;
      backend.Gemm({x.data(), s.m, s.ldx, &bf16, got.data(), s.ldy, s.accumulate});
      backend.Gemm({x.data(), s.m, s.ldx, &f32, want.data(), s.ldy, s.accumulate});
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.ldy; ++j) {
          // Summation order only: bounded by the sum of the magnitudes of the products.
          double mag = s.accumulate ? std::fabs(y0[i * s.ldy + j]) : 0.0;
          if (j < s.n) {
            for (int64_t c = 0; c < s.k; ++c) {
              mag += std::fabs(x[i * s.ldx + c] * wide[j * s.k + c]);
            }
          }
          ASSERT_NEAR(got[i * s.ldy + j], want[i * s.ldy + j], 1e-6 * mag + 1e-30)
              << what << " at (" << i << ", " << j << ")";
        }
      }
    }
  }
}

TEST_F(WeightGemmTest, StackedWeightsReadTheirTwoParts) {
  const int64_t k = 96, top_rows = 10, bottom_rows = 7, m = 3;
  const std::vector<uint16_t> top = RandomBf16(top_rows * k, 4),
                              bottom = RandomBf16(bottom_rows * k, 5);
  std::vector<uint16_t> joined = top;
  joined.insert(joined.end(), bottom.begin(), bottom.end());
  const base::TensorView top_view{"top",
                                  base::DType::kBF16,
                                  {top_rows, k},
                                  reinterpret_cast<const uint8_t*>(top.data()),
                                  top.size() * 2};
  const base::TensorView bottom_view{"bottom",
                                     base::DType::kBF16,
                                     {bottom_rows, k},
                                     reinterpret_cast<const uint8_t*>(bottom.data()),
                                     bottom.size() * 2};
  CpuBackend backend(2);
  auto stacked = backend.UploadStackedWeight("stacked", top_view, bottom_view);
  ASSERT_TRUE(stacked.ok()) << stacked.status();
  EXPECT_EQ(stacked->rows, top_rows + bottom_rows);
  EXPECT_EQ(stacked->data, top.data());  // in place, no copy
  const Weight whole{joined.data(), top_rows + bottom_rows, k, base::DType::kBF16};
  const std::vector<float> x = Random(100 * k, 6);
  for (cpu::Isa isa : Isas()) {
    ASSERT_TRUE(cpu::SetIsa(isa).ok());
    for (int64_t rows : {m, int64_t{100}}) {
      std::vector<float> got(rows * whole.rows), want(rows * whole.rows);
      backend.Gemm({x.data(), rows, k, &*stacked, got.data(), whole.rows, false});
      backend.Gemm({x.data(), rows, k, &whole, want.data(), whole.rows, false});
      EXPECT_EQ(got, want) << cpu::IsaName(isa) << " rows " << rows;
    }
  }
  const base::TensorView f32_view{
      "f32", base::DType::kF32, {2, k / 2}, reinterpret_cast<const uint8_t*>(x.data()), k * 4};
  EXPECT_EQ(backend.UploadStackedWeight("mixed", top_view, f32_view).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WeightGemmTest, WeightsStayWhereTheyAreStoredAndEmbedWidensRows) {
  const int64_t vocab = 5, cols = 40;
  const std::vector<uint16_t> table = RandomBf16(vocab * cols, 7);
  const base::TensorView view{"table",
                              base::DType::kBF16,
                              {vocab, cols},
                              reinterpret_cast<const uint8_t*>(table.data()),
                              table.size() * 2};
  CpuBackend backend(1);
  auto w = backend.UploadWeight(view);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->data, table.data());
  EXPECT_EQ(w->dtype, base::DType::kBF16);
  const std::vector<int32_t> ids = {4, 0, 4};
  std::vector<float> out(ids.size() * cols);
  backend.Embed(*w, ids.data(), static_cast<int64_t>(ids.size()), out.data());
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      EXPECT_EQ(out[i * cols + j], base::Bf16ToFloat(table[ids[i] * cols + j]));
    }
  }
}

TEST_F(WeightGemmTest, RefusesAnInstructionSetThisCpuLacks) {
  EXPECT_TRUE(cpu::SetIsa(cpu::Isa::kPortable).ok());
  EXPECT_EQ(cpu::ActiveIsa(), cpu::Isa::kPortable);
  if (cpu::BestIsa() != cpu::Isa::kAvx512) {
    EXPECT_EQ(cpu::SetIsa(cpu::Isa::kAvx512).code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ringserve::kernels
