#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/base/thread_annotations.h"

namespace ringserve::rpc {

template <typename T>
class ServerStreamReactor;

// The producer side of a server-streaming RPC. Producers (a scheduler thread, an orchestrator)
// Push messages and Finish; the reactor writes them one at a time in order, then finishes.
// The queue has a bound (`capacity` messages waiting to be written): TryPush refuses beyond it,
// and once it refused, the writable callback runs when the client has read enough to make room,
// so a producer whose client stops reading can stop producing instead of buffering. Push ignores
// the bound (for a stream's last message). Shared by the reactor and the producers; outlives
// whichever ends first. Thread-safe.
template <typename T>
class StreamSink {
 public:
  explicit StreamSink(size_t capacity = std::numeric_limits<size_t>::max()) : capacity_(capacity) {}

  // Queues a message whatever the bound; false when the stream is already closed or cancelled.
  bool Push(T message) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || cancelled_) return false;
      queue_.push_back(std::move(message));
    }
    Pump();
    return true;
  }

  // Queues a message if the queue has room; false when it is full (the writable callback runs
  // once it has room again) or the stream is closed or cancelled.
  bool TryPush(T message) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || cancelled_) return false;
      if (queue_.size() >= capacity_) {
        refused_ = true;
        return false;
      }
      queue_.push_back(std::move(message));
    }
    Pump();
    return true;
  }

  // True while TryPush would queue: the stream is open and the queue has room. A false answer
  // arms the writable callback like a refused TryPush.
  bool HasRoom() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || cancelled_) return false;
    if (queue_.size() < capacity_) return true;
    refused_ = true;
    return false;
  }

  // Messages queued and not yet handed to gRPC.
  size_t queued() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

  // Sets the function run (on a gRPC thread, without the sink's lock) when a write completes
  // and leaves room in a queue that refused a message since the last run.
  void OnWritable(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    on_writable_ = std::move(fn);
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

  // Ends the stream now, dropping the queued messages: for a client that stopped reading, whose
  // pending write (or whose status, behind the messages gRPC holds) may never reach it. With the
  // call's context the call is cancelled (the client sees CANCELLED), else it finishes with
  // `status`. Later calls, and Finish, are ignored.
  void Abort(const grpc::Status& status) {
    grpc::CallbackServerContext* cancel = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      finish_status_ = status;
      queue_.clear();
      if (reactor_ != nullptr && context_ != nullptr && !finished_) {
        cancel = context_;
        cancelling_ = true;  // the call cannot finish (and free the context) meanwhile
      }
    }
    if (cancel != nullptr) {
      cancel->TryCancel();  // outside the lock: gRPC may run OnCancel on this thread
      std::lock_guard<std::mutex> lock(mu_);
      cancelling_ = false;
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
      if (writing_ || reactor == nullptr || finished_ || cancelling_) return;
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
    std::function<void()> writable;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (ok && refused_ && queue_.size() < capacity_ && !closed_) {
        refused_ = false;
        writable = on_writable_;
      }
    }
    if (!ok) Cancel();
    Pump();
    if (writable) writable();
  }

  // The RPC is over (OnDone): nothing can be cancelled any more, so the cancel callback is
  // dropped here. It often holds the producer, which holds this sink; kept, that cycle would
  // keep both alive forever (the router leaked every finished request this way).
  void Detach() {
    // Destroyed after the lock is released: its captures may own the last reference to this
    // sink.
    std::function<void()> fn;
    std::function<void()> writable;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reactor_ = nullptr;
      closed_ = true;
      detached_ = true;
      fn = std::move(on_cancel_);
      on_cancel_ = nullptr;
      writable = std::move(on_writable_);
      on_writable_ = nullptr;
      context_ = nullptr;
    }
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<T> queue_ ABSL_GUARDED_BY(mu_);
  T current_;  // the message being written; touched only while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool detached_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;  // Abort is cancelling the call
  bool refused_ ABSL_GUARDED_BY(mu_) = false;  // a message was refused since the last writable run
  std::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_writable_ ABSL_GUARDED_BY(mu_);
  ServerStreamReactor<T>* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::CallbackServerContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;  // for Abort; may be null
};

// The gRPC side of a StreamSink: a write reactor that drains the sink and deletes itself in
// OnDone. Create one in a callback service method and return it; pass the call's context so
// that StreamSink::Abort can cancel a write the client never takes.
template <typename T>
class ServerStreamReactor : public grpc::ServerWriteReactor<T> {
 public:
  explicit ServerStreamReactor(std::shared_ptr<StreamSink<T>> sink,
                               grpc::CallbackServerContext* context = nullptr)
      : sink_(std::move(sink)) {
    {
      std::lock_guard<std::mutex> lock(sink_->mu_);
      sink_->reactor_ = this;
      sink_->context_ = context;
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
