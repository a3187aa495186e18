#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/model/model.h"
#include "common/model/sequence_state.h"
#include "kernels/backend.h"
#include "prefill_worker/prefix_cache.h"

namespace ringserve::prefill {

// A finished prefill: the first token and where the time went, or why it failed.
struct PrefillOutcome {
  absl::Status status;        // OK once the decode worker acked the state
  int32_t first_token = 0;    // when OK
  int64_t cached_tokens = 0;  // prompt tokens restored from the prefix cache
  absl::Duration queue;       // enqueued -> first chunk
  absl::Duration prefill;     // first chunk -> first token sampled
  absl::Duration transfer;    // state sent -> acked
};

// Where one job's events go, without knowing how they travel (the service streams them over
// gRPC). Called from the scheduler's threads, one call at a time per job.
class PrefillSink {
 public:
  virtual ~PrefillSink() = default;
  // `done` of `total` prompt tokens are prefilled; the sink may drop it when its consumer is
  // behind (a later one supersedes it).
  virtual void Progress(size_t done, size_t total) = 0;
  // The last call.
  virtual void Finished(const PrefillOutcome& outcome) = 0;
  // True once the consumer went away.
  virtual bool Cancelled() = 0;
};

// One prompt to prefill and hand to a decode worker.
struct PrefillJob {
  std::string request_id;
  std::vector<int32_t> tokens;
  kernels::SamplingParams sampling;  // position = where the first token is drawn
  std::string decode_address;
  std::string ticket;
  bool progress = false;
  std::string cache_salt;
  std::shared_ptr<PrefillSink> sink;
  absl::Time enqueued;
  // Filled by the scheduler.
  std::unique_ptr<model::SequenceState> state;
  size_t done = 0;
  absl::Time started;
  absl::Time prefilled;
  int32_t first_token = 0;
  int64_t cached_tokens = 0;  // restored from the prefix cache
  cache::Lease cache_lease;   // released on the scheduler thread
};

// Sends a finished job's state to its decode worker; returns once the receiver acked.
using SendState = std::function<absl::Status(const PrefillJob& job)>;

struct PrefillStats {
  uint64_t queued_tokens = 0;  // prompt tokens not yet prefilled (queued and active)
  uint32_t jobs = 0;           // queued + active + transferring
  uint32_t transferring = 0;
  uint64_t prefilled_tokens = 0;
};

// Chunked prefill on one scheduler thread that owns the model: up to `max_active` prompts run
// interleaved, one chunk each in turn, so a short prompt is not stuck behind a 128K one. Finished
// states go to transfer threads (the state stays alive until the decode worker acks), then the
// job's stream gets Done. Admission is bounded by queued prompt tokens. Submit/Cancel/stats are
// thread-safe; the model is touched only by the scheduler thread.
class PrefillScheduler {
 public:
  struct Options {
    int64_t chunk_tokens = 2048;
    uint64_t max_queued_tokens = 1 << 20;
    int max_active = 4;
    int transfer_threads = 2;
    PrefixCache* prefix_cache = nullptr;  // not owned; null: no prefix cache
  };
  PrefillScheduler(model::HybridModel* model, const Options& options, SendState send);
  ~PrefillScheduler();

  void Start();
  void Stop();
  // RESOURCE_EXHAUSTED when the queue bound would be exceeded.
  absl::Status Submit(std::unique_ptr<PrefillJob> job);
  void Cancel(const std::string& request_id);
  PrefillStats stats() const;

 private:
  void Loop();
  void TransferLoop();
  // Reports a job's end (with its timings when `status` is OK) and forgets it.
  void Complete(std::unique_ptr<PrefillJob> job, const absl::Status& status,
                absl::Duration transfer);
  bool RunChunk(PrefillJob& job);

  model::HybridModel* const model_;
  const Options options_;
  const SendState send_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable transfer_cv_;
  std::deque<std::unique_ptr<PrefillJob>> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<PrefillJob>> transfers_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  PrefillStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
  std::vector<std::thread> transfer_threads_;
};

}  // namespace ringserve::prefill
