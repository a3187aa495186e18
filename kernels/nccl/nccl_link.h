#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

// The device side of the NCCL state transport. No CUDA or NCCL types appear here.
namespace ringserve::kernels {

// One buffer of a send or receive, in host or device memory.
struct LinkBuffer {
  void* data;
  size_t bytes;
};

// A two-rank NCCL communicator (non-blocking) between two processes or threads, each rank on its
// own GPU (NCCL cannot put both on one). Send and Recv move a list of buffers with grouped
// ncclSend/ncclRecv on the link's own CUDA stream. The buffers' bytes travel as one stream cut
// into chunks of at most kChunkBytes; a chunk inside one device buffer goes straight from it,
// any other chunk through a device staging buffer, so both sides cut alike whatever their memory
// kinds. Completion is polled against a deadline (ncclCommGetAsyncError, then the stream); an
// NCCL or CUDA error or a timeout aborts the communicator (ncclCommAbort), after which every
// call fails. Owns the communicator, the stream and the staging buffer. One thread drives Send
// and Recv at a time; Abort is thread-safe.
class NcclLink {
 public:
  static constexpr size_t kChunkBytes = size_t{64} << 20;

  // The bytes of a fresh ncclUniqueId.
  static absl::StatusOr<std::string> GenerateUniqueId();
  // CUDA devices visible to this process; 0 without a driver or device.
  static int DeviceCount();

  // Joins the communicator `unique_id` as `rank` (0 or 1) on CUDA device `device`, waiting for
  // the other rank until `deadline` (DEADLINE_EXCEEDED).
  static absl::StatusOr<std::unique_ptr<NcclLink>> Create(const std::string& unique_id, int rank,
                                                          int device, absl::Time deadline);
  ~NcclLink();
  NcclLink(const NcclLink&) = delete;
  NcclLink& operator=(const NcclLink&) = delete;

  // Sends `buffers` to the other rank, whose matching Recv has buffers of the same total size.
  absl::Status Send(const std::vector<LinkBuffer>& buffers, absl::Time deadline);
  absl::Status Recv(const std::vector<LinkBuffer>& buffers, absl::Time deadline);
  // Aborts the communicator; pending and later calls fail with ABORTED.
  void Abort();

  int rank() const;
  int device() const;

 private:
  struct Impl;
  explicit NcclLink(std::unique_ptr<Impl> impl);
  absl::Status Transfer(bool send, const std::vector<LinkBuffer>& buffers, absl::Time deadline);

  std::unique_ptr<Impl> impl_;
};

}  // namespace ringserve::kernels
