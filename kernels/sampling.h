#pragma once

#include <cstdint>

// Host and device (nvcc) callable; plain inline functions for other compilers.
#if defined(__CUDACC__)
#define RINGSERVE_HOST_DEVICE __host__ __device__
#else
#define RINGSERVE_HOST_DEVICE
#endif

namespace ringserve::kernels {

// The random draw of a request at one position: a pure function of (seed, position), so a
// replayed or migrated request samples the same tokens. Returns a value in [0, 1).
RINGSERVE_HOST_DEVICE inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

RINGSERVE_HOST_DEVICE inline double SampleUniform(uint64_t seed, uint64_t position) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(position + 0x632be59bd9b4e019ull));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace ringserve::kernels
