#include "router/core/serializer.h"

namespace ringserve::router::core {

void Serializer::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    if (draining_) return;
    draining_ = true;
  }
  while (true) {
    std::function<void()> next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (tasks_.empty()) {
        draining_ = false;
        return;
      }
      next = std::move(tasks_.front());
      tasks_.pop_front();
    }
    next();
  }
}

}  // namespace ringserve::router::core
