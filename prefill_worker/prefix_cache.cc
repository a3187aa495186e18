#include "prefill_worker/prefix_cache.h"

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status_macros.h"

namespace ringserve::prefill {
namespace {

// Saves one prefix of a sequence through the model.
class SequenceSaver : public cache::Saver {
 public:
  SequenceSaver(model::HybridModel* model, const model::SequenceState& state)
      : model_(model), state_(state) {}
  absl::StatusOr<cache::Blob> SaveKv(int64_t begin, int64_t end) override {
    return model_->SaveKv(state_, begin, end);
  }
  absl::StatusOr<cache::Blob> SaveCheckpoint() override { return model_->SaveLinearStates(state_); }

 private:
  model::HybridModel* const model_;
  const model::SequenceState& state_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(model::HybridModel* model,
                                                                 const Options& options) {
  if (options.max_bytes == 0 || options.page_tokens <= 0 || options.checkpoint_tokens <= 0 ||
      options.checkpoint_tokens % options.page_tokens != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a prefix cache needs a positive size, page and checkpoint spacing, the spacing a "
        "multiple of the page; got ",
        options.max_bytes, " bytes, page ", options.page_tokens, ", spacing ",
        options.checkpoint_tokens));
  }
  return std::unique_ptr<PrefixCache>(new PrefixCache(model, options));
}

PrefixCache::PrefixCache(model::HybridModel* model, const Options& options)
    : model_(model),
      options_(options),
      tree_({options.page_tokens, options.max_bytes, model->kv_bytes_per_token(),
             model->checkpoint_bytes()}) {
  Publish();
}

absl::StatusOr<int64_t> PrefixCache::Restore(std::string_view salt, std::span<const int32_t> tokens,
                                             model::SequenceState* state, cache::Lease* lease) {
  const cache::Hit hit = tree_.Match(salt, tokens, static_cast<int64_t>(tokens.size()) - 1, lease);
  if (hit.tokens > 0) {
    std::vector<model::HybridModel::SavedKv> kv;
    kv.reserve(hit.pages.size());
    for (const cache::KvPage& page : hit.pages) kv.push_back({page.data, page.begin, page.end});
    RETURN_IF_ERROR(model_->Restore(hit.checkpoint, kv, hit.tokens, state));
  }
  Publish();
  return hit.tokens;
}

void PrefixCache::AfterChunk(std::string_view salt, std::span<const int32_t> tokens,
                             const model::SequenceState& state, cache::Lease* lease) {
  const int64_t position = state.position();
  const bool end = position == static_cast<int64_t>(tokens.size());
  if (end || position % options_.checkpoint_tokens == 0) {
    SequenceSaver saver(model_, state);
    absl::StatusOr<bool> stored = tree_.Insert(salt, tokens.first(position), saver, lease);
    if (!stored.ok()) {
      RS_LOG(kWarning) << "event=prefix_checkpoint_failed position=" << position
                       << " status=" << base::Quote(stored.status().ToString());
    }
    Publish();
  }
  if (end) lease->Reset();
}

void PrefixCache::Publish() {
  const cache::PrefixTreeStats stats = tree_.stats();
  std::lock_guard<std::mutex> lock(mu_);
  if (stats.version != stats_.version) {
    hashes_ = tree_.CheckpointHashes(options_.summary_limit, &truncated_);
  }
  stats_ = stats;
}

cache::PrefixTreeStats PrefixCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

internal::v1::PrefixCacheSummary PrefixCache::Summary() const {
  internal::v1::PrefixCacheSummary summary;
  std::lock_guard<std::mutex> lock(mu_);
  summary.set_page_tokens(static_cast<uint32_t>(options_.page_tokens));
  summary.set_checkpoint_tokens(static_cast<uint32_t>(options_.checkpoint_tokens));
  summary.set_version(stats_.version);
  for (uint64_t h : hashes_) summary.add_prefix_hashes(h);
  summary.set_truncated(truncated_);
  summary.set_bytes_used(stats_.bytes);
  summary.set_bytes_limit(stats_.max_bytes);
  return summary;
}

}  // namespace ringserve::prefill
