#include "decode_worker/scheduler.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"

namespace ringserve::decode {
namespace {

const char* ReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kStalled:
      return "stalled";
  }
  return "unknown";
}

absl::Status Stopping() { return absl::UnavailableError("decode worker stopping"); }

// Ends a sequence that never joined the batch because the scheduler stopped.
void EndUnjoined(ReadySequence& seq) {
  seq.sink->Finished({FinishReason::kCancelled, Stopping(), 0, absl::ZeroDuration()});
  if (seq.on_finish) seq.on_finish();
}

}  // namespace

Scheduler::Scheduler(model::HybridModel* model, Options options)
    : model_(model), options_(std::move(options)) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // What the loop did not take (or all of it, when it never started).
  std::deque<ReadySequence> pending;
  std::deque<Admission> admissions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(pending_);
    admissions.swap(admissions_);
    stats_.waiting = 0;
    stats_.admissions = 0;
  }
  for (ReadySequence& seq : pending) EndUnjoined(seq);
  for (Admission& admission : admissions) admission(Stopping());
}

void Scheduler::Submit(ReadySequence sequence) {
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped = stop_;
    if (!stopped) {
      pending_.push_back(std::move(sequence));
      stats_.waiting = static_cast<uint32_t>(pending_.size());
    }
  }
  if (stopped) {
    EndUnjoined(sequence);
    return;
  }
  cv_.notify_all();
}

void Scheduler::Cancel(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(request_id);
  }
  cv_.notify_all();
}

void Scheduler::PostAdmission(Admission admission) {
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped = stop_;
    if (!stopped) {
      admissions_.push_back(std::move(admission));
      stats_.admissions = static_cast<uint32_t>(admissions_.size());
    }
  }
  if (stopped) {
    admission(Stopping());
    return;
  }
  cv_.notify_all();
}

void Scheduler::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::Finish(Running& r, FinishReason reason, absl::Status status) {
  const absl::Duration took = options_.clock->Now() - r.joined;
  RS_LOG(kInfo) << "event=decode_finished request_id=" << base::Quote(r.seq.request_id)
                << " reason=" << ReasonName(reason) << " tokens=" << r.generated
                << " decode_us=" << absl::ToInt64Microseconds(took)
                << (status.ok() ? "" : " status=")
                << (status.ok() ? "" : base::Quote(status.ToString()));
  r.seq.sink->Finished({reason, std::move(status), r.generated, took});
  if (r.seq.on_finish) r.seq.on_finish();
  r.seq.on_finish = nullptr;
  r.seq.state.reset();
}

bool Scheduler::FinishIfDone(Running& r) {
  if (model::IsStopToken(model_->config(), r.seq.options, r.last_token)) {
    Finish(r, FinishReason::kStop, absl::OkStatus());
  } else if (r.generated >= r.seq.options.max_tokens) {
    Finish(r, FinishReason::kLength, absl::OkStatus());
  } else {
    return false;
  }
  return true;
}

void Scheduler::Pace(std::vector<Running>& running, std::vector<Running>& paused) {
  const absl::Time now = options_.clock->Now();
  std::vector<Running> stepping;
  std::vector<Running> waiting;
  for (Running& r : running) {
    if (r.seq.sink->HasRoom()) {
      stepping.push_back(std::move(r));
      continue;
    }
    RS_LOG(kInfo) << "event=decode_paused request_id=" << base::Quote(r.seq.request_id)
                  << " tokens=" << r.generated;
    r.paused_since = now;
    waiting.push_back(std::move(r));
  }
  for (Running& r : paused) {
    if (r.seq.sink->HasRoom()) {
      RS_LOG(kInfo) << "event=decode_resumed request_id=" << base::Quote(r.seq.request_id)
                    << " paused_us=" << absl::ToInt64Microseconds(now - r.paused_since);
      stepping.push_back(std::move(r));
    } else if (now - r.paused_since >= options_.stall_timeout) {
      Finish(r, FinishReason::kStalled,
             absl::DeadlineExceededError(absl::StrCat(
                 "the client read no token for ", absl::FormatDuration(now - r.paused_since),
                 " (the limit is ", absl::FormatDuration(options_.stall_timeout),
                 "); the sequence was ended after ", r.generated, " tokens")));
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.stalled;
    } else {
      waiting.push_back(std::move(r));
    }
  }
  running.swap(stepping);
  paused.swap(waiting);
}

void Scheduler::UpdateCounts(const std::vector<Running>& running,
                             const std::vector<Running>& paused) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<uint32_t>(running.size());
  stats_.paused = static_cast<uint32_t>(paused.size());
}

void Scheduler::Loop() {
  std::vector<Running> running;
  std::vector<Running> paused;
  while (true) {
    std::vector<ReadySequence> joining;
    std::vector<Admission> admissions;
    std::set<std::string> cancelled;
    bool stop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_work = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || woken_ || !running.empty() || !pending_.empty() || !admissions_.empty() ||
               !cancelled_.empty();
      };
      if (paused.empty()) {
        cv_.wait(lock, has_work);
      } else {
        absl::Time first_stall = absl::InfiniteFuture();
        for (const Running& r : paused) {
          first_stall = std::min(first_stall, r.paused_since + options_.stall_timeout);
        }
        const absl::Duration left =
            std::max(absl::ZeroDuration(), first_stall - options_.clock->Now());
        cv_.wait_for(lock, absl::ToChronoNanoseconds(left), has_work);
      }
      stop = stop_;
      woken_ = false;
      const size_t batch = running.size() + paused.size();
      while (!pending_.empty() && static_cast<int>(batch + joining.size()) < options_.max_batch) {
        joining.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      const size_t admit = running.empty()
                               ? admissions_.size()
                               : std::min<size_t>(admissions_.size(), options_.admissions_per_step);
      for (size_t i = 0; i < admit && !stop; ++i) {
        admissions.push_back(std::move(admissions_.front()));
        admissions_.pop_front();
      }
      cancelled.swap(cancelled_);
      stats_.waiting = static_cast<uint32_t>(pending_.size());
      stats_.admissions = static_cast<uint32_t>(admissions_.size());
    }
    for (Admission& admission : admissions) admission(absl::OkStatus());
    for (ReadySequence& seq : joining) {
      RS_LOG(kInfo) << "event=decode_start request_id=" << base::Quote(seq.request_id)
                    << " position=" << seq.state->position();
      Running r{std::move(seq)};
      r.last_token = r.seq.first_token;
      r.joined = options_.clock->Now();
      if (!FinishIfDone(r)) running.push_back(std::move(r));
    }
    for (std::vector<Running>* group : {&running, &paused}) {
      for (Running& r : *group) {
        if (stop || cancelled.count(r.seq.request_id) > 0 || r.seq.sink->Cancelled()) {
          Finish(r, FinishReason::kCancelled, absl::OkStatus());
        }
      }
      std::erase_if(*group, [](const Running& r) { return r.seq.state == nullptr; });
    }
    if (stop) {
      UpdateCounts(running, paused);
      return;
    }
    Pace(running, paused);
    UpdateCounts(running, paused);
    if (!running.empty()) Step(running);
  }
}

void Scheduler::Step(std::vector<Running>& running) {
  std::vector<model::SequenceState*> states;
  std::vector<int32_t> tokens;
  std::vector<kernels::SamplingParams> params;
  for (Running& r : running) {
    states.push_back(r.seq.state.get());
    tokens.push_back(r.last_token);
    kernels::SamplingParams p = r.seq.options.sampling;
    p.position = static_cast<uint64_t>(r.seq.state->position() + 1);
    params.push_back(p);
  }
  std::vector<int32_t> sampled(running.size());
  const absl::Status status =
      model_->DecodeStep(states, tokens, params.data(), sampled.data(), nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    stats_.tokens += running.size();
    stats_.graphs = static_cast<uint32_t>(model_->graphs_captured());
    stats_.graph_steps = static_cast<uint64_t>(model_->graph_replays());
  }
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = running[i];
    if (!status.ok()) {
      Finish(r, FinishReason::kError, status);
      continue;
    }
    r.last_token = sampled[i];
    ++r.generated;
    r.seq.sink->Token(sampled[i]);
    FinishIfDone(r);
  }
  std::erase_if(running, [](const Running& r) { return r.seq.state == nullptr; });
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<uint32_t>(running.size());
}

}  // namespace ringserve::decode
