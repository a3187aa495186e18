#include "decode_worker/scheduler.h"

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "ringserve/v1/generation.pb.h"

namespace ringserve::decode {

using internal::v1::DecodeEvent;
using internal::v1::DecodeFinished;

Scheduler::Scheduler(model::HybridModel* model, int max_batch)
    : model_(model), max_batch_(max_batch) {}

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
}

void Scheduler::Submit(ReadySequence sequence) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(sequence));
    stats_.waiting = static_cast<uint32_t>(pending_.size());
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

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::Finish(Running& r, DecodeFinished finished) {
  finished.set_completion_tokens(static_cast<uint32_t>(r.generated));
  finished.set_decode_us(absl::ToInt64Microseconds(absl::Now() - r.joined));
  DecodeEvent event;
  *event.mutable_finished() = finished;
  r.seq.sink->Push(std::move(event));
  r.seq.sink->Finish(grpc::Status::OK);
  RS_LOG(kInfo) << "event=decode_finished request_id=" << r.seq.request_id
                << " reason=" << finished.reason() << " tokens=" << r.generated
                << " decode_us=" << finished.decode_us();
  if (r.seq.on_finish) r.seq.on_finish();
  r.seq.on_finish = nullptr;
  r.seq.state.reset();
}

void Scheduler::Loop() {
  std::vector<Running> running;
  while (true) {
    std::vector<ReadySequence> joining;
    std::set<std::string> cancelled;
    bool stop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !pending_.empty() || !running.empty(); });
      stop = stop_;
      while (!pending_.empty() && static_cast<int>(running.size() + joining.size()) < max_batch_) {
        joining.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      cancelled.swap(cancelled_);
      stats_.waiting = static_cast<uint32_t>(pending_.size());
    }
    for (ReadySequence& seq : joining) {
      RS_LOG(kInfo) << "event=decode_start request_id=" << seq.request_id
                    << " position=" << seq.state->position();
      running.push_back({std::move(seq), 0, 1, absl::Now()});
      Running& r = running.back();
      r.last_token = r.seq.first_token;
      DecodeFinished done;
      if (model::IsStopToken(model_->config(), r.seq.options, r.last_token)) {
        done.set_reason(ringserve::v1::FINISH_REASON_STOP);
      } else if (r.generated >= r.seq.options.max_tokens) {
        done.set_reason(ringserve::v1::FINISH_REASON_LENGTH);
      } else {
        continue;
      }
      Finish(r, done);
    }
    for (Running& r : running) {
      if (r.seq.state == nullptr) continue;
      if (stop || cancelled.count(r.seq.request_id) > 0 || r.seq.sink->cancelled()) {
        DecodeFinished done;
        done.set_reason(ringserve::v1::FINISH_REASON_CANCELLED);
        Finish(r, done);
      }
    }
    std::erase_if(running, [](const Running& r) { return r.seq.state == nullptr; });
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.running = static_cast<uint32_t>(running.size());
    }
    if (stop) {
      std::lock_guard<std::mutex> lock(mu_);
      for (ReadySequence& seq : pending_) {
        seq.sink->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker stopping"));
        if (seq.on_finish) seq.on_finish();
      }
      pending_.clear();
      return;
    }
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
  const absl::Status status = WithBackend(
      [&] { return model_->DecodeStep(states, tokens, params.data(), sampled.data(), nullptr); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    stats_.tokens += running.size();
    stats_.graphs = static_cast<uint32_t>(model_->graphs_captured());
    stats_.graph_steps = static_cast<uint64_t>(model_->graph_replays());
  }
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = running[i];
    DecodeFinished done;
    if (!status.ok()) {
      done.set_reason(ringserve::v1::FINISH_REASON_ERROR);
      done.set_error_message(std::string(status.message()));
      Finish(r, done);
      continue;
    }
    r.last_token = sampled[i];
    ++r.generated;
    DecodeEvent event;
    event.mutable_tokens()->add_token_ids(static_cast<uint32_t>(sampled[i]));
    r.seq.sink->Push(std::move(event));
    if (model::IsStopToken(model_->config(), r.seq.options, r.last_token)) {
      done.set_reason(ringserve::v1::FINISH_REASON_STOP);
    } else if (r.generated >= r.seq.options.max_tokens) {
      done.set_reason(ringserve::v1::FINISH_REASON_LENGTH);
    } else {
      continue;
    }
    Finish(r, done);
  }
  std::erase_if(running, [](const Running& r) { return r.seq.state == nullptr; });
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<uint32_t>(running.size());
}

}  // namespace ringserve::decode
