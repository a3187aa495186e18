#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "ringserve/internal/v1/worker.pb.h"

namespace ringserve::router::core {

// What the router knows of one worker address, refreshed by its pool's polls.
struct WorkerView {
  std::string address;
  bool healthy = false;
  uint64_t epoch = 0;
  internal::v1::WorkerStatus status;
  std::string error;
  // Tokens this router assigned to the worker since its last poll (corrects the polled load
  // between polls, so a burst of requests spreads out).
  int64_t inflight_tokens = 0;
  // When the worker last answered a status poll (InfinitePast: never).
  absl::Time last_seen = absl::InfinitePast();
};

// The workers of one pool ("prefill" or "decode") as the core sees them. Implementations are
// thread-safe and never block.
class WorkerDirectory {
 public:
  virtual ~WorkerDirectory() = default;
  virtual const std::string& role() const = 0;
  virtual std::vector<WorkerView> Snapshot() const = 0;
  // Marks an address unhealthy at once (a call to it failed); a later poll may restore it.
  virtual void ReportFailure(const std::string& address, const std::string& error) = 0;
  // Counts `tokens` newly assigned to an address, until its next poll.
  virtual void AddAssigned(const std::string& address, int64_t tokens) = 0;
  // Polls every worker now (joining a poll in flight) and runs `done` once it has answered.
  virtual void RefreshNow(std::function<void()> done) = 0;
};

}  // namespace ringserve::router::core
