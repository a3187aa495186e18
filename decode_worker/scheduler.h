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
#include "common/base/clock.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "common/model/sequence_state.h"

namespace ringserve::decode {

// Why a sequence left the batch.
enum class FinishReason {
  kStop,       // a stop token
  kLength,     // max_tokens
  kCancelled,  // cancelled, released, or the worker stopped
  kError,      // the decode step failed
  kStalled,    // its consumer took no token for the stall timeout
};

// The end of one sequence.
struct SequenceEnd {
  FinishReason reason = FinishReason::kStop;
  // OK, or what went wrong: the step's error (kError), DEADLINE_EXCEEDED (kStalled),
  // UNAVAILABLE for a sequence that never joined because the worker stopped (kCancelled).
  absl::Status status;
  int64_t completion_tokens = 0;  // tokens generated, the first (sampled by prefill) included
  absl::Duration decode_time;     // since the sequence joined the batch
};

// Where one sequence's output goes, without knowing how it travels (the service streams it over
// gRPC). Called only from the scheduler thread.
class SequenceSink {
 public:
  virtual ~SequenceSink() = default;
  // Whether the consumer can take another token now. While it cannot, the sequence waits out
  // of the batch (holding its state) until the sink calls Scheduler::Wake, or ends kStalled.
  virtual bool HasRoom() = 0;
  virtual void Token(int32_t token) = 0;
  // The last call.
  virtual void Finished(const SequenceEnd& end) = 0;
  // True once the consumer went away.
  virtual bool Cancelled() = 0;
};

// A sequence whose state has arrived and verified, ready to join the running batch.
struct ReadySequence {
  std::string request_id;
  std::unique_ptr<model::SequenceState> state;  // position = tokens already consumed
  int32_t first_token = 0;         // sampled by prefill (and already streamed by the router)
  model::GenerateOptions options;  // max_tokens counts the first token; sampling.seed set
  std::shared_ptr<SequenceSink> sink;
  // Called once on the scheduler thread when the sequence leaves the batch (frees its
  // reservation).
  std::function<void()> on_finish;
};

// Counters for status and metrics.
struct SchedulerStats {
  uint32_t running = 0;     // in the batch
  uint32_t paused = 0;      // out of the batch, waiting for their consumers to read
  uint32_t waiting = 0;     // submitted, not yet joined
  uint32_t admissions = 0;  // posted, not yet run
  uint64_t steps = 0;
  uint64_t tokens = 0;
  uint64_t stalled = 0;      // sequences ended because their consumer stopped reading
  uint32_t graphs = 0;       // decode graphs the model holds (one per batch size)
  uint64_t graph_steps = 0;  // steps replayed from a graph
};

// Continuous batching: one scheduler thread owns every running sequence and the model. At each
// step boundary it runs posted admissions (state allocations), admits submitted sequences, ends
// finished or cancelled ones, takes out of the batch those whose sink has no room (and puts back
// those whose sink drained), then runs one DecodeStep over the batch and hands each sequence's
// token to its sink. Nothing else touches the backend, so no other thread waits for a step and
// no step waits for another thread. Submit/Cancel/PostAdmission/Wake/stats are thread-safe;
// everything else runs on the scheduler thread.
class Scheduler {
 public:
  struct Options {
    int max_batch = 64;  // sequences running or paused at once
    // How long a paused sequence waits for its consumer before it ends kStalled.
    absl::Duration stall_timeout = absl::Seconds(30);
    // Admissions run at one step boundary while sequences are running (all of them when idle),
    // so a burst of reservations delays each step by a bounded amount.
    int admissions_per_step = 4;
    base::Clock* clock = base::Clock::Real();
  };
  // Work for the scheduler thread between steps. Called once: there with OK, or with
  // UNAVAILABLE on the stopping thread when the scheduler stops before running it.
  using Admission = std::function<void(const absl::Status& status)>;

  Scheduler(model::HybridModel* model, Options options);
  ~Scheduler();

  void Start();
  // Ends every sequence (kCancelled) and admission (UNAVAILABLE) and joins the thread.
  void Stop();
  void Submit(ReadySequence sequence);
  void Cancel(const std::string& request_id);
  void PostAdmission(Admission admission);
  // Makes the loop look at its paused sequences again (a sink has room).
  void Wake();
  SchedulerStats stats() const;

 private:
  struct Running {
    ReadySequence seq;
    int32_t last_token = 0;
    int64_t generated = 1;
    absl::Time joined;
    absl::Time paused_since;  // while paused
  };

  void Loop();
  // Reports the end of `r` to its sink and runs its on_finish.
  void Finish(Running& r, FinishReason reason, absl::Status status);
  // Finishes `r` when its last token ends it (a stop token or max_tokens); returns whether it did.
  bool FinishIfDone(Running& r);
  // Moves sequences between the batch and the paused set; ends those paused too long.
  void Pace(std::vector<Running>& running, std::vector<Running>& paused);
  void Step(std::vector<Running>& running);
  void UpdateCounts(const std::vector<Running>& running, const std::vector<Running>& paused);

  model::HybridModel* const model_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ReadySequence> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<Admission> admissions_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace ringserve::decode
