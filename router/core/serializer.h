#pragma once

#include <functional>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ringserve::router::core {

// Runs posted tasks one at a time, in order, on whichever thread posts while none is running
// (the poster drains the queue; a task posted meanwhile runs after the current one on the
// draining thread). No thread of its own; no lock is held while a task runs, so tasks may post
// more tasks and call out freely. Thread-safe.
class Serializer {
 public:
  void Post(std::function<void()> task);

 private:
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);  // no memory while empty
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ringserve::router::core
