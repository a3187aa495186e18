#include "router/core/policy.h"

#include <algorithm>
#include <tuple>

namespace ringserve::router::core {
namespace {

template <typename Key>
std::vector<std::string> Rank(const std::vector<WorkerView>& workers, Key key) {
  std::vector<const WorkerView*> healthy;
  for (const WorkerView& w : workers) {
    if (w.healthy) healthy.push_back(&w);
  }
  std::sort(healthy.begin(), healthy.end(), [&](const WorkerView* a, const WorkerView* b) {
    return std::make_tuple(key(*a), a->address) < std::make_tuple(key(*b), b->address);
  });
  std::vector<std::string> out;
  for (const WorkerView* w : healthy) out.push_back(w->address);
  return out;
}

}  // namespace

std::vector<std::string> LoadPolicy::RankPrefill(const std::vector<WorkerView>& workers) const {
  return Rank(workers, [](const WorkerView& w) {
    return static_cast<int64_t>(w.status.queued_prompt_tokens()) + w.inflight_tokens;
  });
}

std::vector<std::string> LoadPolicy::RankDecode(const std::vector<WorkerView>& workers) const {
  return Rank(workers, [](const WorkerView& w) {
    const int64_t free = static_cast<int64_t>(w.status.kv_tokens_total()) -
                         static_cast<int64_t>(w.status.kv_tokens_used()) - w.inflight_tokens;
    return std::make_tuple(-free, w.status.running());
  });
}

}  // namespace ringserve::router::core
