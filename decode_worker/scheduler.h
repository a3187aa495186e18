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
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "common/model/sequence_state.h"
#include "common/rpc/server_stream.h"
#include "ringserve/internal/v1/worker.pb.h"

namespace ringserve::decode {

// A sequence whose state has arrived and verified, ready to join the running batch.
struct ReadySequence {
  std::string request_id;
  std::unique_ptr<model::SequenceState> state;  // position = tokens already consumed
  int32_t first_token = 0;         // sampled by prefill (and already streamed by the router)
  model::GenerateOptions options;  // max_tokens counts the first token; sampling.seed set
  std::shared_ptr<rpc::StreamSink<internal::v1::DecodeEvent>> sink;
  // Called once on the scheduler thread when the sequence leaves the batch (frees its
  // reservation).
  std::function<void()> on_finish;
};

// Counters for status and metrics.
struct SchedulerStats {
  uint32_t running = 0;
  uint32_t waiting = 0;
  uint64_t steps = 0;
  uint64_t tokens = 0;
  uint32_t graphs = 0;       // decode graphs the model holds (one per batch size)
  uint64_t graph_steps = 0;  // steps replayed from a graph
};

// Continuous batching: one scheduler thread owns every running sequence and the model; at each
// step boundary it admits submitted sequences and drops finished or cancelled ones, then runs
// one DecodeStep over the whole batch and streams each sequence's token to its sink.
// Submit/Cancel/stats are thread-safe; everything else runs on the scheduler thread.
class Scheduler {
 public:
  Scheduler(model::HybridModel* model, int max_batch);
  ~Scheduler();

  void Start();
  // Finishes every sequence with CANCELLED and joins the thread.
  void Stop();
  void Submit(ReadySequence sequence);
  void Cancel(const std::string& request_id);
  SchedulerStats stats() const;

  // Runs fn() while no decode step runs and returns its result. The backend is not
  // thread-safe: other threads that use it (allocating the state of a reservation) go through
  // here.
  template <typename Fn>
  auto WithBackend(Fn fn) {
    std::lock_guard<std::mutex> lock(backend_mu_);
    return fn();
  }

 private:
  struct Running {
    ReadySequence seq;
    int32_t last_token;
    int64_t generated;
    absl::Time joined;
  };

  void Loop();
  // Streams the end of `r` and runs its on_finish.
  void Finish(Running& r, ringserve::internal::v1::DecodeFinished finished);
  void Step(std::vector<Running>& running);

  model::HybridModel* const model_;
  const int max_batch_;
  std::mutex backend_mu_;  // held by each decode step and by WithBackend
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ReadySequence> pending_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace ringserve::decode
