#include "router/core/serializer.h"

namespace ringserve::router::core {

void Serializer::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    if (draining_) return;
    draining_ = true;
  }
  std::vector<std::function<void()>> batch;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (tasks_.empty()) {
        draining_ = false;
        return;
      }
      batch.swap(tasks_);
    }
    for (auto& task : batch) task();
    batch.clear();
  }
}

}  // namespace ringserve::router::core
