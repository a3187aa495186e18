#include "router/core/policy.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include "common/cache/prefix_tree.h"

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

// Queued prompt tokens: the predicted prefill time of the work ahead of a new prompt.
int64_t PrefillLoad(const WorkerView& w) {
  return static_cast<int64_t>(w.status.queued_prompt_tokens()) + w.inflight_tokens;
}

}  // namespace

std::string_view RouteReasonName(RouteReason reason) {
  switch (reason) {
    case RouteReason::kCacheHit:
      return "cache_hit";
    case RouteReason::kLoad:
      return "load";
    case RouteReason::kFallback:
      return "fallback";
  }
  return "unknown";
}

PrefillRanking LoadPolicy::RankPrefill(const std::vector<WorkerView>& workers,
                                       const PrefillQuery& query) {
  PrefillRanking ranking;
  ranking.addresses = Rank(workers, PrefillLoad);
  return ranking;
}

std::vector<std::string> LoadPolicy::RankDecode(const std::vector<WorkerView>& workers) const {
  return Rank(workers, [](const WorkerView& w) {
    const int64_t free = static_cast<int64_t>(w.status.kv_tokens_total()) -
                         static_cast<int64_t>(w.status.kv_tokens_used()) - w.inflight_tokens;
    return std::make_tuple(-free, w.status.running());
  });
}

PrefixPolicy::Known& PrefixPolicy::Refresh(const WorkerView& w, absl::Time now) {
  Known& known = known_[w.address];
  if (w.epoch != known.epoch) {
    known = Known{};  // a restarted worker starts empty
    known.epoch = w.epoch;
  }
  const internal::v1::PrefixCacheSummary& summary = w.status.prefix_cache();
  const auto expired = [&](const auto& entry) { return now - entry.second > options_.sent_ttl; };
  if (!known.version.has_value() || *known.version != summary.version()) {
    known.version = summary.version();
    known.reported = absl::flat_hash_set<uint64_t>(summary.prefix_hashes().begin(),
                                                   summary.prefix_hashes().end());
    absl::erase_if(known.sent, expired);
  }
  if (known.sent.size() > options_.max_sent) absl::erase_if(known.sent, expired);
  if (known.sent.size() > options_.max_sent) known.sent.clear();
  return known;
}

int64_t PrefixPolicy::Cached(const Known& known, const std::vector<uint64_t>& hashes, int64_t page,
                             size_t prompt_tokens, absl::Time now) const {
  // A restore leaves at least the prompt's last token to compute.
  const size_t usable = std::min(
      hashes.size(), static_cast<size_t>((static_cast<int64_t>(prompt_tokens) - 1) / page));
  for (size_t pages = usable; pages > 0; --pages) {
    const uint64_t h = hashes[pages - 1];
    if (known.reported.contains(h)) return static_cast<int64_t>(pages) * page;
    const auto it = known.sent.find(h);
    if (it != known.sent.end() && now - it->second <= options_.sent_ttl) {
      return static_cast<int64_t>(pages) * page;
    }
  }
  return 0;
}

PrefillRanking PrefixPolicy::RankPrefill(const std::vector<WorkerView>& workers,
                                         const PrefillQuery& query) {
  PrefillRanking ranking = load_.RankPrefill(workers, query);
  if (ranking.addresses.empty()) return ranking;
  absl::flat_hash_map<std::string_view, const WorkerView*> views;
  for (const WorkerView& w : workers) views[w.address] = &w;
  const std::vector<int32_t> tokens(query.tokens.begin(), query.tokens.end());
  absl::flat_hash_map<int64_t, std::vector<uint64_t>> hashes_by_page;
  const auto hashes_for = [&](int64_t page) -> const std::vector<uint64_t>& {
    auto it = hashes_by_page.find(page);
    if (it == hashes_by_page.end()) {
      it = hashes_by_page.emplace(page, cache::PrefixHashes(query.cache_salt, tokens, page)).first;
    }
    return it->second;
  };
  const int64_t n = static_cast<int64_t>(tokens.size());

  absl::MutexLock lock(&mu_);
  // The prefill work ahead of this prompt's last token at each worker: its queue plus the
  // prompt's uncached tokens there.
  std::vector<int64_t> cached(ranking.addresses.size(), 0);
  std::vector<int64_t> work(ranking.addresses.size(), 0);
  int64_t least_work = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < ranking.addresses.size(); ++i) {
    const WorkerView& w = *views.at(ranking.addresses[i]);
    Known& known = Refresh(w, query.now);
    const int64_t page = w.status.prefix_cache().page_tokens();
    if (page > 0) cached[i] = Cached(known, hashes_for(page), page, tokens.size(), query.now);
    work[i] = PrefillLoad(w) + n - cached[i];
    least_work = std::min(least_work, work[i]);
  }
  size_t best = 0;
  bool held_elsewhere = false;
  for (size_t i = 0; i < ranking.addresses.size(); ++i) {
    if (cached[i] == 0) continue;
    if (work[i] - least_work > options_.balance_tokens) {
      held_elsewhere = true;
    } else if (cached[i] > ranking.cached_tokens) {  // ties keep the less loaded
      best = i;
      ranking.cached_tokens = cached[i];
    }
  }
  if (ranking.cached_tokens > 0) {
    std::rotate(ranking.addresses.begin(), ranking.addresses.begin() + static_cast<long>(best),
                ranking.addresses.begin() + static_cast<long>(best) + 1);
    ranking.reason = RouteReason::kCacheHit;
  } else {
    ranking.reason = held_elsewhere ? RouteReason::kFallback : RouteReason::kLoad;
  }

  // The chosen worker will checkpoint the prompt at multiples of its spacing and at its end.
  const WorkerView& chosen = *views.at(ranking.addresses.front());
  const internal::v1::PrefixCacheSummary& summary = chosen.status.prefix_cache();
  const int64_t page = summary.page_tokens();
  if (page > 0) {
    Known& known = known_[chosen.address];
    const std::vector<uint64_t>& hashes = hashes_for(page);
    const auto note = [&](int64_t end) {
      const int64_t pages = end / page;
      if (pages > 0 && pages <= static_cast<int64_t>(hashes.size())) {
        known.sent[hashes[pages - 1]] = query.now;
      }
    };
    for (int64_t end = summary.checkpoint_tokens(); end > 0 && end <= n;
         end += summary.checkpoint_tokens()) {
      note(end);
    }
    note(n);
  }
  return ranking;
}

std::vector<std::string> PrefixPolicy::RankDecode(const std::vector<WorkerView>& workers) const {
  return load_.RankDecode(workers);
}

}  // namespace ringserve::router::core
