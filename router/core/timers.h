#pragma once

#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace ringserve::router::core {

// Time and timers for the router core, injected so tests drive them by hand. Implementations are
// thread-safe; callbacks run on a thread of the implementation's choosing and must not block.
class Timers {
 public:
  using Id = uint64_t;
  virtual ~Timers() = default;
  virtual absl::Time Now() const = 0;
  // Runs `fn` once at or after `at`, unless cancelled first. Never blocks. Ids are never 0.
  virtual Id At(absl::Time at, std::function<void()> fn) = 0;
  // Cancels a timer that has not fired; a no-op otherwise (including id 0).
  virtual void Cancel(Id id) = 0;
};

}  // namespace ringserve::router::core
