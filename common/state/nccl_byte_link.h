#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/state/transport.h"
#include "kernels/nccl/nccl_link.h"

// The NCCL transport's ByteLink (built with RINGSERVE_CUDA, library ringserve_state_nccl).
namespace ringserve::state {

// A ByteLink over an NcclLink. Thread-safety as ByteLink's.
class NcclByteLink : public ByteLink {
 public:
  explicit NcclByteLink(std::unique_ptr<kernels::NcclLink> link) : link_(std::move(link)) {}

  absl::Status Send(const std::vector<Span>& buffers, absl::Time deadline) override;
  absl::Status Recv(const std::vector<Span>& buffers, absl::Time deadline) override;
  void Abort() override { link_->Abort(); }

 private:
  const std::unique_ptr<kernels::NcclLink> link_;
};

// Makes NcclByteLinks on one CUDA device. Thread-safe.
class NcclByteLinkFactory : public ByteLinkFactory {
 public:
  explicit NcclByteLinkFactory(int device) : device_(device) {}

  absl::StatusOr<std::string> NewUniqueId() override;
  absl::StatusOr<std::unique_ptr<ByteLink>> Connect(const std::string& unique_id, int rank,
                                                    absl::Time deadline) override;

 private:
  const int device_;
};

}  // namespace ringserve::state
