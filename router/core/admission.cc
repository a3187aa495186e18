#include "router/core/admission.h"

#include "absl/strings/str_cat.h"

namespace ringserve::router::core {

absl::Status Admission::Enter(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ids_.size() >= max_inflight_) {
    return absl::ResourceExhaustedError(absl::StrCat("router has ", ids_.size(),
                                                     " requests in flight; the limit is ",
                                                     max_inflight_, " (--max-inflight)"));
  }
  if (!ids_.insert(id).second) {
    return absl::InvalidArgumentError(absl::StrCat("request_id '", id, "' is already in flight"));
  }
  return absl::OkStatus();
}

void Admission::Leave(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ids_.erase(id);
}

uint32_t Admission::inflight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint32_t>(ids_.size());
}

AdmissionQueue::Id AdmissionQueue::Push(std::function<void()> turn, bool front) {
  std::lock_guard<std::mutex> lock(mu_);
  const Id id = next_id_++;
  if (front) {
    waiters_.push_front({id, std::move(turn)});
  } else {
    waiters_.push_back({id, std::move(turn)});
  }
  return id;
}

void AdmissionQueue::Remove(Id id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(waiters_, [id](const Waiter& w) { return w.id == id; });
}

void AdmissionQueue::Wake() {
  std::function<void()> turn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiters_.empty()) return;
    turn = std::move(waiters_.front().turn);
    waiters_.pop_front();
  }
  turn();
}

size_t AdmissionQueue::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

}  // namespace ringserve::router::core
