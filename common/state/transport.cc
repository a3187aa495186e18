#include "common/state/transport.h"

#include "absl/strings/str_cat.h"

namespace ringserve::state {

absl::StatusOr<internal::v1::StateManifest> BuildJobManifest(const StateLayout& layout,
                                                             const TransferJob& job,
                                                             const ManifestOptions& options) {
  if (job.state == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("the transfer of request '", job.request_id, "' has no state"));
  }
  ManifestOptions with_memory = options;
  with_memory.memory = job.memory;
  return BuildManifest(layout, *job.state, job.tokens,
                       {job.request_id, job.ticket, job.model_fingerprint, job.sender_epoch,
                        job.first_token, job.sampling},
                       with_memory);
}

}  // namespace ringserve::state
