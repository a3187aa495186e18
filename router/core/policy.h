#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "router/core/worker_directory.h"

namespace ringserve::router::core {

// The prompt a prefill worker is being chosen for.
struct PrefillQuery {
  std::string_view cache_salt;
  std::span<const uint32_t> tokens;  // the prompt, plus the tokens generated before a migration
  absl::Time now;
};

// Why the first prefill worker of a ranking was chosen: it holds a cached prefix of the prompt
// (kCacheHit); no worker holds one (kLoad); one does but is busier than the balance bound allows
// (kFallback).
enum class RouteReason { kCacheHit, kLoad, kFallback };
std::string_view RouteReasonName(RouteReason reason);

struct PrefillRanking {
  std::vector<std::string> addresses;  // healthy workers, the one to send the prompt to first
  RouteReason reason = RouteReason::kLoad;
  int64_t cached_tokens = 0;  // the first worker's predicted cached prefix
};

// Orders the healthy workers of a pool for a new request; the router sends the prompt to the
// first of a prefill ranking (a policy may remember that) and tries decode workers in order.
// Implementations are thread-safe.
class Policy {
 public:
  virtual ~Policy() = default;
  virtual PrefillRanking RankPrefill(const std::vector<WorkerView>& workers,
                                     const PrefillQuery& query) = 0;
  virtual std::vector<std::string> RankDecode(const std::vector<WorkerView>& workers) const = 0;
};

// Prefill: fewest queued prompt tokens first. Decode: most free KV tokens first, then fewest
// running sequences. Ties go to the lower address so choices are reproducible. Stateless.
class LoadPolicy : public Policy {
 public:
  PrefillRanking RankPrefill(const std::vector<WorkerView>& workers,
                             const PrefillQuery& query) override;
  std::vector<std::string> RankDecode(const std::vector<WorkerView>& workers) const override;
};

struct PrefixPolicyOptions {
  // A worker holding a prefix is chosen only while the prefill work ahead of the prompt's end
  // there (its queued prompt tokens plus the prompt's uncached tokens: the predicted prefill
  // time) exceeds the least such work on any worker by at most this.
  int64_t balance_tokens = 16384;
  // What this router sent a worker counts as held there for this long without the worker's
  // report (the prefill may still be running; the report catches up at the next polls).
  absl::Duration sent_ttl = absl::Seconds(30);
  size_t max_sent = 65536;  // per worker; expired entries are dropped past it
};

// Prefix-aware prefill routing: each worker's PrefixCacheSummary from the polls (forgotten on a
// new epoch), plus the prefixes this router sent it since, predict the cached prefix each worker
// would restore for a prompt (whole pages, leaving at least the last token to compute). Among
// the workers whose predicted work for the prompt (queue + uncached tokens) is within the balance
// bound of the least, the one with the longest prefix comes first, the rest by load; with no
// prefix there, by load (LoadPolicy). Decode as LoadPolicy.
// Thread-safe (one mutex around the per-worker state).
class PrefixPolicy : public Policy {
 public:
  explicit PrefixPolicy(PrefixPolicyOptions options) : options_(options) {}

  PrefillRanking RankPrefill(const std::vector<WorkerView>& workers,
                             const PrefillQuery& query) override;
  std::vector<std::string> RankDecode(const std::vector<WorkerView>& workers) const override;

 private:
  struct Known {
    uint64_t epoch = 0;
    std::optional<uint64_t> version;  // of the summary folded in; none before the first
    absl::flat_hash_set<uint64_t> reported;
    absl::flat_hash_map<uint64_t, absl::Time> sent;  // prefix hash -> when this router sent it
  };

  // `w`'s state brought up to its latest poll.
  Known& Refresh(const WorkerView& w, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tokens of the longest prefix `known` holds, given the prompt's hashes at `page` tokens.
  int64_t Cached(const Known& known, const std::vector<uint64_t>& hashes, int64_t page,
                 size_t prompt_tokens, absl::Time now) const;

  const PrefixPolicyOptions options_;
  LoadPolicy load_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Known> known_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ringserve::router::core
