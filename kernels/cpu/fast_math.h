#pragma once

#include <cstdint>
#include <cstring>

namespace ringserve::kernels::cpu {

// exp(x) for x <= 0 down to -87 (0 below), relative error < 2e-7; branch-free so that loops
// over it vectorise. Range reduction x = n ln2 + r, |r| <= ln2 / 2, then a degree-6 polynomial.
inline float FastExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace ringserve::kernels::cpu
