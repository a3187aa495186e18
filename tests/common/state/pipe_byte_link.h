#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/state/transport.h"

namespace ringserve::state::testing {

// One direction of a pipe: a Send waits until the peer's Recv, whose buffers must have the same
// sizes, has copied its bytes (the rendezvous of NCCL point-to-point). Thread-safe.
class PipeChannel {
 public:
  absl::Status Send(const std::vector<Span>& buffers, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    if (aborted_) return absl::AbortedError("the pipe was aborted");
    posted_ = &buffers;
    const uint64_t seq = ++sent_;
    auto taken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return taken_ >= seq || aborted_; };
    mu_.AwaitWithDeadline(absl::Condition(&taken), deadline);
    if (taken_ >= seq) return absl::OkStatus();
    posted_ = nullptr;
    return aborted_ ? absl::AbortedError("the pipe was aborted")
                    : absl::DeadlineExceededError("no receive took the send by its deadline");
  }

  absl::Status Recv(const std::vector<Span>& buffers, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto posted = [&]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return posted_ != nullptr || aborted_; };
    mu_.AwaitWithDeadline(absl::Condition(&posted), deadline);
    if (aborted_) return absl::AbortedError("the pipe was aborted");
    if (posted_ == nullptr) return absl::DeadlineExceededError("no send arrived by the deadline");
    const std::vector<Span>& sent = *posted_;
    bool same = sent.size() == buffers.size();
    for (size_t i = 0; same && i < sent.size(); ++i) same = sent[i].bytes == buffers[i].bytes;
    if (!same) {
      aborted_ = true;
      return absl::InternalError("a receive's buffers do not match the send's");
    }
    for (size_t i = 0; i < sent.size(); ++i) {
      std::memcpy(buffers[i].data, sent[i].data, sent[i].bytes);
    }
    posted_ = nullptr;
    ++taken_;
    return absl::OkStatus();
  }

  void Abort() {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
  }

 private:
  absl::Mutex mu_;
  const std::vector<Span>* posted_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t taken_ ABSL_GUARDED_BY(mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
};

// Both directions between rank 0 and rank 1; an abort of either end breaks both.
struct PipePair {
  PipeChannel to[2];  // to[r]: the channel rank r receives on

  void Abort() {
    to[0].Abort();
    to[1].Abort();
  }
};

// One end of a PipePair, with the shape of an NcclByteLink.
class PipeByteLink : public ByteLink {
 public:
  PipeByteLink(std::shared_ptr<PipePair> pair, int rank) : pair_(std::move(pair)), rank_(rank) {}

  absl::Status Send(const std::vector<Span>& buffers, absl::Time deadline) override {
    return pair_->to[1 - rank_].Send(buffers, deadline);
  }
  absl::Status Recv(const std::vector<Span>& buffers, absl::Time deadline) override {
    return pair_->to[rank_].Recv(buffers, deadline);
  }
  void Abort() override { pair_->Abort(); }

 private:
  const std::shared_ptr<PipePair> pair_;
  const int rank_;
};

// Pairs PipeByteLinks by unique id, like ncclCommInitRank: Connect blocks until both ranks of an
// id joined. Counts the pairs made and can break them all (a failing interconnect).
// Thread-safe.
class PipeLinkFactory : public ByteLinkFactory {
 public:
  absl::StatusOr<std::string> NewUniqueId() override {
    absl::MutexLock lock(&mu_);
    return absl::StrCat("pipe-", ++next_id_);
  }

  absl::StatusOr<std::unique_ptr<ByteLink>> Connect(const std::string& unique_id, int rank,
                                                    absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    Pending& p = pending_[unique_id];
    if (p.pair == nullptr) p.pair = std::make_shared<PipePair>();
    if (p.joined[rank]) return absl::InvalidArgumentError("a rank joined twice");
    p.joined[rank] = true;
    auto both = [&p]() { return p.joined[0] && p.joined[1]; };
    if (!mu_.AwaitWithDeadline(absl::Condition(&both), deadline)) {
      pending_.erase(unique_id);
      return absl::DeadlineExceededError(absl::StrCat("the peer of ", unique_id, " never joined"));
    }
    std::shared_ptr<PipePair> pair = p.pair;
    if (++p.taken == 2) {
      pending_.erase(unique_id);
      pairs_.push_back(pair);
    }
    return std::make_unique<PipeByteLink>(std::move(pair), rank);
  }

  // Link pairs made so far.
  int connects() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(pairs_.size());
  }

  void AbortAll() {
    absl::MutexLock lock(&mu_);
    for (auto& pair : pairs_) pair->Abort();
  }

 private:
  struct Pending {
    std::shared_ptr<PipePair> pair;
    bool joined[2] = {false, false};
    int taken = 0;
  };
  absl::Mutex mu_;
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<PipePair>> pairs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ringserve::state::testing
