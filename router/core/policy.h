#pragma once

#include <string>
#include <vector>

#include "router/core/worker_directory.h"

namespace ringserve::router::core {

// Orders the healthy workers of a pool for a new request; the router tries them in that order.
// Implementations are stateless and thread-safe.
class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::vector<std::string> RankPrefill(const std::vector<WorkerView>& workers) const = 0;
  virtual std::vector<std::string> RankDecode(const std::vector<WorkerView>& workers) const = 0;
};

// Prefill: fewest queued prompt tokens first. Decode: most free KV tokens first, then fewest
// running sequences. Ties go to the lower address so choices are reproducible.
class LoadPolicy : public Policy {
 public:
  std::vector<std::string> RankPrefill(const std::vector<WorkerView>& workers) const override;
  std::vector<std::string> RankDecode(const std::vector<WorkerView>& workers) const override;
};

}  // namespace ringserve::router::core
