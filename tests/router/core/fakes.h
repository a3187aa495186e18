#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "router/core/request_flow.h"

namespace ringserve::router::core::testing {

// Timers that move only when told. Single-threaded (tests).
class FakeTimers : public Timers {
 public:
  absl::Time Now() const override { return now_; }
  Id At(absl::Time at, std::function<void()> fn) override {
    const Id id = next_++;
    timers_[id] = {at, std::move(fn)};
    return id;
  }
  // With late_cancel, Cancel does nothing: the timer behaves as if it had already fired and its
  // event were on its way (the race a real timer thread allows).
  void Cancel(Id id) override {
    if (!late_cancel) timers_.erase(id);
  }
  bool late_cancel = false;
  // Moves time forward, running every timer that falls due in order.
  void Advance(absl::Duration d) {
    const absl::Time until = now_ + d;
    while (true) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.first <= until &&
            (due == timers_.end() || it->second.first < due->second.first)) {
          due = it;
        }
      }
      if (due == timers_.end()) break;
      now_ = std::max(now_, due->second.first);
      auto fn = std::move(due->second.second);
      timers_.erase(due);
      fn();
    }
    now_ = until;
  }
  size_t pending() const { return timers_.size(); }

 private:
  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1000);
  Id next_ = 1;
  std::map<Id, std::pair<absl::Time, std::function<void()>>> timers_;
};

// A pool whose views the test sets.
class FakeDirectory : public WorkerDirectory {
 public:
  FakeDirectory(std::string role, std::vector<std::string> addresses) : role_(std::move(role)) {
    for (auto& a : addresses) {
      WorkerView v;
      v.address = a;
      v.healthy = true;
      v.epoch = 1;
      views_.push_back(v);
    }
  }
  const std::string& role() const override { return role_; }
  std::vector<WorkerView> Snapshot() const override { return views_; }
  void ReportFailure(const std::string& address, const std::string& error) override {
    failures.push_back(address);
    if (WorkerView* v = Find(address)) v->healthy = false;
  }
  void AddAssigned(const std::string& address, int64_t tokens) override {
    assigned.emplace_back(address, tokens);
  }
  void RefreshNow(std::function<void()> done) override {
    ++refreshes;
    if (on_refresh) on_refresh(this);
    done();
  }
  WorkerView* Find(const std::string& address) {
    for (auto& v : views_) {
      if (v.address == address) return &v;
    }
    return nullptr;
  }
  std::vector<WorkerView>& views() { return views_; }

  std::vector<std::string> failures;
  std::vector<std::pair<std::string, int64_t>> assigned;
  int refreshes = 0;
  std::function<void(FakeDirectory*)> on_refresh;

 private:
  std::string role_;
  std::vector<WorkerView> views_;
};

// A stream the test drives: Send delivers a message to an outstanding Read, End ends it.
template <typename Event>
class FakeStream : public WorkerStream {
 public:
  FakeStream(std::string address, StreamCallbacks<Event> callbacks)
      : address(std::move(address)), callbacks_(std::move(callbacks)) {}
  void Read() override {
    if (!ended) ++reads;
  }
  void Cancel() override {
    cancelled = true;
    End(absl::CancelledError("cancelled"));
  }
  // Delivers `e`; false when no read was outstanding (the core is not reading).
  bool Send(Event e) {
    if (ended || reads == 0) return false;
    --reads;
    callbacks_.on_message(std::move(e));
    return true;
  }
  void End(const absl::Status& s) {
    if (ended) return;
    ended = true;
    auto on_end = std::move(callbacks_.on_end);
    callbacks_ = {};
    on_end(s);
  }

  const std::string address;
  int reads = 0;
  bool ended = false;
  bool cancelled = false;

 private:
  StreamCallbacks<Event> callbacks_;
};

using FakeDecodeStream = FakeStream<internal::v1::DecodeEvent>;
using FakePrefillStream = FakeStream<internal::v1::PrefillEvent>;

// Records every call; the test answers them.
class FakeWorkerClient : public WorkerClient {
 public:
  struct PendingReserve {
    std::string address;
    internal::v1::ReserveRequest request;
    absl::Time deadline;
    std::function<void(absl::StatusOr<internal::v1::ReserveResponse>)> done;
  };
  struct Released {
    std::string address;
    std::string ticket;
  };

  void Reserve(const std::string& address, internal::v1::ReserveRequest request,
               absl::Time deadline,
               std::function<void(absl::StatusOr<internal::v1::ReserveResponse>)> done) override {
    reserves.push_back({address, std::move(request), deadline, std::move(done)});
  }
  void Release(const std::string& address, internal::v1::ReleaseRequest request,
               std::function<void()> done) override {
    released.push_back({address, request.ticket()});
    done();
  }
  std::shared_ptr<WorkerStream> OpenDecode(
      const std::string& address, internal::v1::DecodeRequest request, absl::Time,
      StreamCallbacks<internal::v1::DecodeEvent> callbacks) override {
    decode_requests.push_back(request);
    decodes.push_back(std::make_shared<FakeDecodeStream>(address, std::move(callbacks)));
    return decodes.back();
  }
  std::shared_ptr<WorkerStream> StartPrefill(
      const std::string& address, internal::v1::PrefillRequest request, absl::Time,
      StreamCallbacks<internal::v1::PrefillEvent> callbacks) override {
    prefill_requests.push_back(request);
    prefills.push_back(std::make_shared<FakePrefillStream>(address, std::move(callbacks)));
    return prefills.back();
  }

  // Answers the oldest unanswered Reserve.
  std::string AnswerReserve(absl::StatusOr<std::string> ticket_or) {
    PendingReserve r = std::move(reserves.at(answered));
    ++answered;
    if (!ticket_or.ok()) {
      r.done(ticket_or.status());
      return r.address;
    }
    internal::v1::ReserveResponse resp;
    resp.set_ticket(*ticket_or);
    resp.set_epoch(1);
    r.done(resp);
    return r.address;
  }
  size_t unanswered() const { return reserves.size() - answered; }

  std::vector<PendingReserve> reserves;
  size_t answered = 0;
  std::vector<Released> released;
  std::vector<internal::v1::DecodeRequest> decode_requests;
  std::vector<internal::v1::PrefillRequest> prefill_requests;
  std::vector<std::shared_ptr<FakeDecodeStream>> decodes;
  std::vector<std::shared_ptr<FakePrefillStream>> prefills;
};

// The client's end: records what the flow writes; acknowledges writes when asked (or at once).
class FakeClient : public ClientStream {
 public:
  void Write(ringserve::v1::GenerateResponse message) override {
    messages.push_back(std::move(message));
    ++unacked;
    if (auto_ack) Ack(1);
  }
  void Finish(const absl::Status& s) override {
    ++finishes;
    status = s;
  }
  void Abort(const absl::Status& s) override {
    ++finishes;
    aborted = true;
    status = s;
  }
  void Ack(int n) {
    for (int i = 0; i < n && unacked > 0; ++i) {
      --unacked;
      flow->OnClientWriteDone();
    }
  }
  std::vector<uint32_t> Tokens() const {
    std::vector<uint32_t> out;
    for (const auto& m : messages) {
      if (m.has_delta())
        out.insert(out.end(), m.delta().token_ids().begin(), m.delta().token_ids().end());
    }
    return out;
  }
  int Progress() const {
    int n = 0;
    for (const auto& m : messages) n += m.has_progress() ? 1 : 0;
    return n;
  }
  const ringserve::v1::Finished* Finished() const {
    for (const auto& m : messages) {
      if (m.has_finished()) return &m.finished();
    }
    return nullptr;
  }

  RequestFlow* flow = nullptr;
  bool auto_ack = true;
  int unacked = 0;
  std::vector<ringserve::v1::GenerateResponse> messages;
  int finishes = 0;
  bool aborted = false;
  absl::Status status = absl::UnknownError("not finished");
};

// Counts what the flows report.
class CountingObserver : public FlowObserver {
 public:
  void Finished(const std::string& outcome, absl::Duration, size_t, size_t) override {
    outcomes.push_back(outcome);
  }
  void QueueWait(absl::Duration wait) override { waits.push_back(wait); }
  void PrefillRetry() override { ++prefill_retries; }
  void Migration() override { ++migrations; }
  void HungWorker(const std::string& role) override { hung.push_back(role); }
  void PrefillRouted(RouteReason reason) override { routes.push_back(reason); }

  std::vector<std::string> outcomes;
  std::vector<absl::Duration> waits;
  int prefill_retries = 0;
  int migrations = 0;
  std::vector<std::string> hung;
  std::vector<RouteReason> routes;
};

}  // namespace ringserve::router::core::testing
