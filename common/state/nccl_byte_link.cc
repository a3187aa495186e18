#include "common/state/nccl_byte_link.h"

#include "common/base/status_macros.h"

namespace ringserve::state {
namespace {

std::vector<kernels::LinkBuffer> ToLinkBuffers(const std::vector<Span>& spans) {
  std::vector<kernels::LinkBuffer> buffers;
  buffers.reserve(spans.size());
  for (const Span& s : spans) buffers.push_back({s.data, s.bytes});
  return buffers;
}

}  // namespace

absl::Status NcclByteLink::Send(const std::vector<Span>& buffers, absl::Time deadline) {
  return link_->Send(ToLinkBuffers(buffers), deadline);
}

absl::Status NcclByteLink::Recv(const std::vector<Span>& buffers, absl::Time deadline) {
  return link_->Recv(ToLinkBuffers(buffers), deadline);
}

absl::StatusOr<std::string> NcclByteLinkFactory::NewUniqueId() {
  return kernels::NcclLink::GenerateUniqueId();
}

absl::StatusOr<std::unique_ptr<ByteLink>> NcclByteLinkFactory::Connect(const std::string& unique_id,
                                                                       int rank,
                                                                       absl::Time deadline) {
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::NcclLink> link,
                   kernels::NcclLink::Create(unique_id, rank, device_, deadline));
  return std::make_unique<NcclByteLink>(std::move(link));
}

}  // namespace ringserve::state
