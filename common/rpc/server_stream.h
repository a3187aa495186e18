#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/base/thread_annotations.h"

namespace ringserve::rpc {

template <typename T>
class ServerStreamReactor;

// The producer side of a server-streaming RPC. Producers (a scheduler thread, an orchestrator)
// Push messages and Finish; the reactor writes them one at a time in order, then finishes.
// Shared by the reactor and the producers; outlives whichever ends first. Thread-safe.
template <typename T>
class StreamSink {
 public:
  // Queues a message; false when the stream is already closed or cancelled.
  bool Push(T message) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || cancelled_) return false;
      queue_.push_back(std::move(message));
    }
    Pump();
    return true;
  }

  // Ends the stream with `status` after the queued messages. Later calls are ignored.
  void Finish(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      finish_status_ = status;
    }
    Pump();
  }

  // True once the client cancelled (or went away).
  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  // Runs `fn` once, on the gRPC thread, when the client cancels or disconnects (at once if it
  // already has).
  void OnCancel(std::function<void()> fn) {
    bool run_now = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) {
        run_now = true;
      } else if (!detached_) {  // after OnDone there is nothing left to cancel
        on_cancel_ = std::move(fn);
      }
    }
    if (run_now) fn();
  }

 private:
  friend class ServerStreamReactor<T>;

  void Pump() {
    enum { kNone, kWrite, kFinish } action = kNone;
    grpc::Status status;
    ServerStreamReactor<T>* reactor;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reactor = reactor_;
      if (writing_ || reactor == nullptr || finished_) return;
      if (!queue_.empty() && !cancelled_) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
        action = kWrite;
      } else if (closed_ || cancelled_) {
        finished_ = true;
        status = cancelled_ ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client")
                            : *finish_status_;
        action = kFinish;
      }
    }
    if (action == kWrite) reactor->StartWrite(&current_);
    if (action == kFinish) reactor->Finish(status);
  }

  void Cancel() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      fn = std::move(on_cancel_);
    }
    if (fn) fn();
  }

  void WriteDone(bool ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
    }
    if (!ok) Cancel();
    Pump();
  }

  // The RPC is over (OnDone): nothing can be cancelled any more, so the cancel callback is
  // dropped here. It often holds the producer, which holds this sink; kept, that cycle would
  // keep both alive forever (the router leaked every finished request this way).
  void Detach() {
    // Destroyed after the lock is released: its captures may own the last reference to this
    // sink.
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reactor_ = nullptr;
      closed_ = true;
      detached_ = true;
      fn = std::move(on_cancel_);
      on_cancel_ = nullptr;
    }
  }

  mutable std::mutex mu_;
  std::deque<T> queue_ ABSL_GUARDED_BY(mu_);
  T current_;  // the message being written; touched only while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool detached_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(mu_);
  ServerStreamReactor<T>* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// The gRPC side of a StreamSink: a write reactor that drains the sink and deletes itself in
// OnDone. Create with NewServerStream in a callback service method and return it.
template <typename T>
class ServerStreamReactor : public grpc::ServerWriteReactor<T> {
 public:
  explicit ServerStreamReactor(std::shared_ptr<StreamSink<T>> sink) : sink_(std::move(sink)) {
    {
      std::lock_guard<std::mutex> lock(sink_->mu_);
      sink_->reactor_ = this;
    }
    sink_->Pump();
  }

  void OnWriteDone(bool ok) override { sink_->WriteDone(ok); }
  void OnCancel() override {
    sink_->Cancel();
    sink_->Pump();
  }
  void OnDone() override {
    sink_->Detach();
    delete this;
  }

 private:
  std::shared_ptr<StreamSink<T>> sink_;
};

// A reactor that finishes at once with `status` (for requests rejected before streaming).
template <typename T>
grpc::ServerWriteReactor<T>* RejectStream(const grpc::Status& status) {
  auto sink = std::make_shared<StreamSink<T>>();
  sink->Finish(status);
  return new ServerStreamReactor<T>(sink);
}

}  // namespace ringserve::rpc
