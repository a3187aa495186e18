#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/cache/prefix_tree.h"
#include "common/model/model.h"
#include "common/model/sequence_state.h"
#include "ringserve/internal/v1/worker.pb.h"

namespace ringserve::prefill {

// The prefill worker's prefix cache: a cache::PrefixTree of the model's KV pages and state
// checkpoints, held in backend memory (device memory on the CUDA backend), filled and read
// through the model's checkpoint paths. Checkpoints are taken at every multiple of
// checkpoint_tokens and at the end of every prompt; a request restores the longest cached
// prefix that leaves at least its last token to compute.
//
// Restore and AfterChunk run on the prefill scheduler thread, which owns the model and the
// tree; leases they hand out are released on that thread too. stats() and Summary() are
// thread-safe snapshots taken after the last of those calls. Must outlive every lease.
class PrefixCache {
 public:
  struct Options {
    size_t max_bytes = 0;
    int64_t page_tokens = 64;
    // A multiple of page_tokens; the prefill chunk divides it, so checkpoints fall on the chunk
    // boundaries of a cold run.
    int64_t checkpoint_tokens = 2048;
    size_t summary_limit = 1024;  // prefix hashes in Summary
  };

  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(model::HybridModel* model,
                                                             const Options& options);

  // Restores into the fresh `state` the longest cached prefix of `tokens` in the namespace
  // `salt` that leaves at least the last token to compute, and returns its length (0: none).
  // `lease` then pins what was restored from.
  absl::StatusOr<int64_t> Restore(std::string_view salt, std::span<const int32_t> tokens,
                                  model::SequenceState* state, cache::Lease* lease);

  // Runs after every prefill chunk of `tokens` into `state`: at a multiple of checkpoint_tokens
  // and at the end of the prompt, stores a checkpoint and the KV not yet held, moving `lease`
  // there. A prefix that does not fit is not stored and a failed save is logged: neither
  // changes what the request computes. At the end of the prompt `lease` is released.
  void AfterChunk(std::string_view salt, std::span<const int32_t> tokens,
                  const model::SequenceState& state, cache::Lease* lease);

  cache::PrefixTreeStats stats() const;
  // What the cache holds, for the worker's status (bounded by summary_limit).
  internal::v1::PrefixCacheSummary Summary() const;

 private:
  PrefixCache(model::HybridModel* model, const Options& options);
  // Copies the tree's stats (and, when they changed, its prefix hashes) into the snapshot.
  void Publish();

  model::HybridModel* const model_;
  const Options options_;
  cache::PrefixTree tree_;
  mutable std::mutex mu_;
  cache::PrefixTreeStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> hashes_ ABSL_GUARDED_BY(mu_);
  bool truncated_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ringserve::prefill
