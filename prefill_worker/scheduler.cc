#include "prefill_worker/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"

namespace ringserve::prefill {

PrefillScheduler::PrefillScheduler(model::HybridModel* model, const Options& options,
                                   SendState send)
    : model_(model), options_(options), send_(std::move(send)) {}

PrefillScheduler::~PrefillScheduler() { Stop(); }

void PrefillScheduler::Start() {
  thread_ = std::thread([this] { Loop(); });
  for (int i = 0; i < options_.transfer_threads; ++i) {
    transfer_threads_.emplace_back([this] { TransferLoop(); });
  }
}

void PrefillScheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  transfer_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& t : transfer_threads_) t.join();
  transfer_threads_.clear();
}

absl::Status PrefillScheduler::Submit(std::unique_ptr<PrefillJob> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("prefill worker is stopping");
    if (stats_.queued_tokens + job->tokens.size() > options_.max_queued_tokens) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "prefill queue holds ", stats_.queued_tokens, " prompt tokens; ", job->tokens.size(),
          " more would exceed the limit ", options_.max_queued_tokens));
    }
    stats_.queued_tokens += job->tokens.size();
    ++stats_.jobs;
    RS_LOG(kInfo) << "event=prefill_queued request_id=" << base::Quote(job->request_id)
                  << " tokens=" << job->tokens.size() << " queued_tokens=" << stats_.queued_tokens;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void PrefillScheduler::Cancel(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(request_id);
  }
  cv_.notify_all();
}

PrefillStats PrefillScheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void PrefillScheduler::Complete(std::unique_ptr<PrefillJob> job, const absl::Status& status,
                                absl::Duration transfer) {
  PrefillOutcome outcome{status};
  if (status.ok()) {
    outcome.first_token = job->first_token;
    outcome.cached_tokens = job->cached_tokens;
    outcome.queue = job->started - job->enqueued;
    outcome.prefill = job->prefilled - job->started;
    outcome.transfer = transfer;
  }
  job->sink->Finished(outcome);
  RS_LOG(kInfo) << "event=prefill_done request_id=" << base::Quote(job->request_id)
                << " status=" << base::Quote(status.ToString())
                << " transfer_us=" << absl::ToInt64Microseconds(transfer);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.queued_tokens -= job->tokens.size() - std::min(job->done, job->tokens.size());
  --stats_.jobs;
}

bool PrefillScheduler::RunChunk(PrefillJob& job) {
  if (job.state == nullptr) {
    auto state = model_->NewState(static_cast<int64_t>(job.tokens.size()));
    if (!state.ok()) {
      job.sink->Finished({state.status()});
      return false;
    }
    job.state = std::move(*state);
    job.started = absl::Now();
    if (options_.prefix_cache != nullptr) {
      auto restored = options_.prefix_cache->Restore(job.cache_salt, job.tokens, job.state.get(),
                                                     &job.cache_lease);
      if (!restored.ok()) {
        job.sink->Finished({restored.status()});
        return false;
      }
      job.done = job.cached_tokens = *restored;
      std::lock_guard<std::mutex> lock(mu_);
      stats_.queued_tokens -= job.done;
    }
    RS_LOG(kInfo) << "event=prefill_start request_id=" << base::Quote(job.request_id)
                  << " cached_tokens=" << job.cached_tokens;
  }
  // Chunks end where a cold run's would, also after a restore.
  const size_t chunk = static_cast<size_t>(options_.chunk_tokens);
  const size_t n = std::min<size_t>(chunk - job.done % chunk, job.tokens.size() - job.done);
  const bool last = job.done + n == job.tokens.size();
  const absl::Status status = model_->Prefill(
      std::span<const int32_t>(job.tokens).subspan(job.done, n), job.state.get(),
      options_.chunk_tokens, last ? model::LogitsMode::kLast : model::LogitsMode::kNone, nullptr);
  if (!status.ok()) {
    job.sink->Finished({status});
    return false;
  }
  job.done += n;
  if (options_.prefix_cache != nullptr) {
    options_.prefix_cache->AfterChunk(job.cache_salt, job.tokens, *job.state, &job.cache_lease);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.queued_tokens -= n;
    stats_.prefilled_tokens += n;
  }
  if (job.progress && !last) job.sink->Progress(job.done, job.tokens.size());
  if (last) {
    auto token = model_->SampleLast(job.sampling);
    if (!token.ok()) {
      job.sink->Finished({token.status()});
      return false;
    }
    job.first_token = *token;
    job.prefilled = absl::Now();
  }
  return true;
}

void PrefillScheduler::Loop() {
  std::vector<std::unique_ptr<PrefillJob>> active;
  size_t next = 0;
  while (true) {
    std::set<std::string> cancelled;
    std::vector<std::unique_ptr<PrefillJob>> dropped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !active.empty(); });
      if (stop_) break;
      cancelled.swap(cancelled_);
      for (auto& job : queue_) {
        if (cancelled.count(job->request_id) > 0 || job->sink->Cancelled()) {
          dropped.push_back(std::move(job));
        }
      }
      std::erase_if(queue_, [](const auto& j) { return j == nullptr; });
      while (!queue_.empty() && static_cast<int>(active.size()) < options_.max_active) {
        active.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (auto& job : dropped) {
      Complete(std::move(job), absl::CancelledError("prefill cancelled"), absl::ZeroDuration());
    }
    for (auto& job : active) {
      if (cancelled.count(job->request_id) > 0 || job->sink->Cancelled()) {
        Complete(std::move(job), absl::CancelledError("prefill cancelled"), absl::ZeroDuration());
      }
    }
    std::erase_if(active, [](const auto& j) { return j == nullptr; });
    if (active.empty()) continue;
    next %= active.size();
    PrefillJob& job = *active[next];
    const bool ok = RunChunk(job);
    if (!ok || job.done == job.tokens.size()) {
      std::unique_ptr<PrefillJob> finished = std::move(active[next]);
      active.erase(active.begin() + static_cast<long>(next));
      if (!ok) {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.queued_tokens -= finished->tokens.size() - finished->done;
        --stats_.jobs;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.transferring;
        transfers_.push_back(std::move(finished));
      }
      transfer_cv_.notify_one();
    } else {
      ++next;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Status stopping = absl::UnavailableError("prefill worker stopping");
  for (auto& job : active) job->sink->Finished({stopping});
  for (auto& job : queue_) job->sink->Finished({stopping});
  queue_.clear();
}

void PrefillScheduler::TransferLoop() {
  while (true) {
    std::unique_ptr<PrefillJob> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      transfer_cv_.wait(lock, [&] { return stop_ || !transfers_.empty(); });
      if (transfers_.empty()) return;
      job = std::move(transfers_.front());
      transfers_.pop_front();
    }
    const absl::Time start = absl::Now();
    RS_LOG(kInfo) << "event=transfer_start request_id=" << base::Quote(job->request_id)
                  << " decode=" << job->decode_address;
    const absl::Status status = send_(*job);
    const absl::Duration took = absl::Now() - start;
    job->state.reset();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --stats_.transferring;
    }
    Complete(std::move(job), status, took);
  }
}

}  // namespace ringserve::prefill
