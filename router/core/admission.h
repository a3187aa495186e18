#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"

namespace ringserve::router::core {

// The router's in-flight bound: every Generate stream (until the client's stream is closed) and
// every Tokenize call holds one slot under a unique id. Thread-safe.
class Admission {
 public:
  explicit Admission(uint32_t max_inflight) : max_inflight_(max_inflight) {}
  // Takes a slot for `id`: RESOURCE_EXHAUSTED when every slot is taken, INVALID_ARGUMENT when
  // `id` already holds one.
  absl::Status Enter(const std::string& id);
  // Frees the slot of `id` (a no-op when it holds none).
  void Leave(const std::string& id);
  uint32_t inflight() const;

 private:
  const uint32_t max_inflight_;
  mutable std::mutex mu_;
  std::set<std::string> ids_ ABSL_GUARDED_BY(mu_);
};

// Requests waiting for decode capacity, first in first out. When capacity may have freed (a
// reservation ended, a poll answered), Wake() hands the turn to the head waiter, which tries to
// reserve; it passes the turn on (Wake again) when it is placed or gives up, and returns to the
// head when every worker is still full. Thread-safe; turns run outside the lock.
class AdmissionQueue {
 public:
  using Id = uint64_t;
  // Adds a waiter at the back (or the front: a waiter whose turn found no room). `turn` runs
  // once, on the waking thread, unless the waiter is removed first. Ids are never 0.
  Id Push(std::function<void()> turn, bool front = false);
  // Removes a waiter (a no-op once its turn was handed out).
  void Remove(Id id);
  // Hands the turn to the head waiter, if any.
  void Wake();
  size_t size() const;

 private:
  struct Waiter {
    Id id;
    std::function<void()> turn;
  };
  mutable std::mutex mu_;
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ringserve::router::core
