#include "kernels/cpu/fast_math.h"

#include <cmath>

#include "gtest/gtest.h"

namespace ringserve::kernels::cpu {
namespace {

TEST(FastMathTest, ExpMatchesLibmOnTheNonPositiveRange) {
  for (float x = -90.0f; x <= 0.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    const double got = FastExpNonPositive(x);
    if (x < -87.0f) {
      EXPECT_LT(got, 2e-38);
    } else {
      ASSERT_NEAR(got, want, 3e-7 * want) << "x = " << x;
    }
  }
  EXPECT_EQ(FastExpNonPositive(0.0f), 1.0f);
}

}  // namespace
}  // namespace ringserve::kernels::cpu
