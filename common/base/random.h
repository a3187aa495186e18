#pragma once

#include <cstdint>
#include <random>

namespace ringserve::base {

// A random 64-bit value from a per-thread engine seeded by the OS (ids, tickets, seeds; not
// for cryptography). Thread-safe.
inline uint64_t RandomU64() {
  thread_local std::mt19937_64 engine([] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }());
  return engine();
}

}  // namespace ringserve::base
