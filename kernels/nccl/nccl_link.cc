#include "kernels/nccl/nccl_link.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::kernels {
namespace {

// How long a poll for completion sleeps between looks.
constexpr auto kPollInterval = std::chrono::microseconds(20);
// How long the destructor lets a communicator finalize before it aborts it.
constexpr absl::Duration kFinalizeTimeout = absl::Seconds(5);

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

bool IsDevicePointer(const void* p) {
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();  // clears the error an unregistered host pointer leaves
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

// Walks the concatenation of a buffer list.
class Cursor {
 public:
  explicit Cursor(const std::vector<LinkBuffer>& buffers) : buffers_(buffers) { Skip(); }

  // The device pointer of the next `bytes` bytes when they lie inside one device buffer.
  void* Contiguous(size_t bytes) const {
    const LinkBuffer& b = buffers_[index_];
    if (b.bytes - offset_ < bytes || !IsDevicePointer(b.data)) return nullptr;
    return static_cast<char*>(b.data) + offset_;
  }

  // Calls fn(pointer, n) over the next `bytes` bytes, piece by piece, and moves past them.
  template <typename Fn>
  absl::Status Walk(size_t bytes, Fn fn) {
    while (bytes > 0) {
      const LinkBuffer& b = buffers_[index_];
      const size_t n = std::min(bytes, b.bytes - offset_);
      RETURN_IF_ERROR(fn(static_cast<char*>(b.data) + offset_, n));
      bytes -= n;
      offset_ += n;
      Skip();
    }
    return absl::OkStatus();
  }

 private:
  void Skip() {
    while (index_ < buffers_.size() && offset_ == buffers_[index_].bytes) {
      ++index_;
      offset_ = 0;
    }
  }

  const std::vector<LinkBuffer>& buffers_;
  size_t index_ = 0;
  size_t offset_ = 0;
};

}  // namespace

struct NcclLink::Impl {
  int rank = 0;
  int device = 0;
  cudaStream_t stream = nullptr;
  void* staging = nullptr;  // kChunkBytes of device memory
  std::mutex mu;            // orders NCCL calls on `comm` against Abort
  ncclComm_t comm ABSL_GUARDED_BY(mu) = nullptr;
  absl::Status error ABSL_GUARDED_BY(mu);  // why the link is unusable

  ~Impl() {
    cudaSetDevice(device);
    {
      std::lock_guard<std::mutex> lock(mu);
      if (comm != nullptr) Close();
    }
    if (staging != nullptr) cudaFree(staging);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Finalizes and destroys the communicator, or aborts it when that does not finish in time.
  void Close() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ncclResult_t result = ncclCommFinalize(comm);
    const absl::Time until = absl::Now() + kFinalizeTimeout;
    while (result == ncclInProgress && absl::Now() < until) {
      std::this_thread::sleep_for(kPollInterval);
      ncclCommGetAsyncError(comm, &result);
    }
    if (result == ncclSuccess) {
      ncclCommDestroy(comm);
    } else {
      ncclCommAbort(comm);
    }
    comm = nullptr;
  }

  // Aborts the communicator, remembering why; returns the reason.
  absl::Status AbortLocked(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (error.ok()) error = std::move(why);
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    return error;
  }

  absl::Status Fail(absl::Status why) {
    std::lock_guard<std::mutex> lock(mu);
    return AbortLocked(std::move(why));
  }

  // Waits until the communicator's queued work is enqueued and the stream drained.
  absl::Status Wait(absl::Time deadline, const char* what) {
    for (;;) {
      bool enqueued;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!error.ok()) return error;
        ncclResult_t async = ncclSuccess;
        const ncclResult_t queried = ncclCommGetAsyncError(comm, &async);
        if (queried != ncclSuccess) async = queried;
        if (async != ncclSuccess && async != ncclInProgress) {
          return AbortLocked(absl::InternalError(
              absl::StrCat(what, " on NCCL rank ", rank, " failed: ", ncclGetErrorString(async))));
        }
        enqueued = async == ncclSuccess;
      }
      if (enqueued) {
        const cudaError_t query = cudaStreamQuery(stream);
        if (query == cudaSuccess) return absl::OkStatus();
        if (query != cudaErrorNotReady) {
          return Fail(CudaStatus(query, absl::StrCat(what, " on NCCL rank ", rank).c_str()));
        }
      }
      if (absl::Now() > deadline) {
        return Fail(absl::DeadlineExceededError(
            absl::StrCat(what, " on NCCL rank ", rank, " did not finish by its deadline")));
      }
      std::this_thread::sleep_for(kPollInterval);
    }
  }
};

absl::StatusOr<std::string> NcclLink::GenerateUniqueId() {
  ncclUniqueId id;
  const ncclResult_t result = ncclGetUniqueId(&id);
  if (result != ncclSuccess) {
    return absl::InternalError(
        absl::StrCat("ncclGetUniqueId failed: ", ncclGetErrorString(result)));
  }
  return std::string(id.internal, sizeof(id.internal));
}

int NcclLink::DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<NcclLink>> NcclLink::Create(const std::string& unique_id, int rank,
                                                           int device, absl::Time deadline) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("an NCCL unique id has ", sizeof(id.internal),
                                                   " bytes, not ", unique_id.size()));
  }
  if (rank != 0 && rank != 1) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of a two-rank link"));
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  auto impl = std::make_unique<Impl>();
  impl->rank = rank;
  impl->device = device;
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking),
                             "cudaStreamCreate"));
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&impl->staging, kChunkBytes), "cudaMalloc"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    const ncclResult_t result = ncclCommInitRankConfig(&impl->comm, 2, id, rank, &config);
    if (result != ncclSuccess && result != ncclInProgress) {
      if (impl->comm != nullptr) ncclCommAbort(impl->comm);
      impl->comm = nullptr;
      return absl::InternalError(absl::StrCat("ncclCommInitRankConfig on rank ", rank,
                                              " failed: ", ncclGetErrorString(result)));
    }
  }
  RETURN_IF_ERROR(impl->Wait(deadline, "joining the link"));
  return std::unique_ptr<NcclLink>(new NcclLink(std::move(impl)));
}

NcclLink::NcclLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclLink::~NcclLink() = default;

int NcclLink::rank() const { return impl_->rank; }
int NcclLink::device() const { return impl_->device; }

void NcclLink::Abort() {
  impl_
      ->Fail(
          absl::AbortedError(absl::StrCat("the NCCL link of rank ", impl_->rank, " was aborted")))
      .IgnoreError();
}

absl::Status NcclLink::Send(const std::vector<LinkBuffer>& buffers, absl::Time deadline) {
  return Transfer(true, buffers, deadline);
}

absl::Status NcclLink::Recv(const std::vector<LinkBuffer>& buffers, absl::Time deadline) {
  return Transfer(false, buffers, deadline);
}

absl::Status NcclLink::Transfer(bool send, const std::vector<LinkBuffer>& buffers,
                                absl::Time deadline) {
  Impl& l = *impl_;
  const char* what = send ? "a send" : "a receive";
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(l.device), "cudaSetDevice"));
  size_t total = 0;
  for (const LinkBuffer& b : buffers) total += b.bytes;
  Cursor cursor(buffers);
  const int peer = 1 - l.rank;
  for (size_t done = 0; done < total;) {
    const size_t chunk = std::min(kChunkBytes, total - done);
    void* direct = cursor.Contiguous(chunk);
    void* wire = direct != nullptr ? direct : l.staging;
    if (send && direct == nullptr) {
      size_t at = 0;
      RETURN_IF_ERROR(cursor.Walk(chunk, [&](char* p, size_t n) {
        const cudaError_t copied =
            cudaMemcpyAsync(static_cast<char*>(l.staging) + at, p, n, cudaMemcpyDefault, l.stream);
        at += n;
        return copied == cudaSuccess ? absl::OkStatus()
                                     : l.Fail(CudaStatus(copied, "staging a send"));
      }));
    }
    {
      std::lock_guard<std::mutex> lock(l.mu);
      if (!l.error.ok()) return l.error;
      ncclGroupStart();
      ncclResult_t result = send ? ncclSend(wire, chunk, ncclUint8, peer, l.comm, l.stream)
                                 : ncclRecv(wire, chunk, ncclUint8, peer, l.comm, l.stream);
      const ncclResult_t ended = ncclGroupEnd();
      if (result == ncclSuccess || result == ncclInProgress) result = ended;
      if (result != ncclSuccess && result != ncclInProgress) {
        return l.AbortLocked(absl::InternalError(
            absl::StrCat(what, " on NCCL rank ", l.rank, " failed: ", ncclGetErrorString(result))));
      }
    }
    RETURN_IF_ERROR(l.Wait(deadline, what));
    if (!send && direct == nullptr) {
      size_t at = 0;
      RETURN_IF_ERROR(cursor.Walk(chunk, [&](char* p, size_t n) {
        const cudaError_t copied =
            cudaMemcpyAsync(p, static_cast<char*>(l.staging) + at, n, cudaMemcpyDefault, l.stream);
        at += n;
        return copied == cudaSuccess ? absl::OkStatus()
                                     : l.Fail(CudaStatus(copied, "unstaging a receive"));
      }));
      RETURN_IF_ERROR(l.Wait(deadline, what));
    } else if (direct != nullptr) {
      RETURN_IF_ERROR(cursor.Walk(chunk, [](char*, size_t) { return absl::OkStatus(); }));
    }
    done += chunk;
  }
  return absl::OkStatus();
}

}  // namespace ringserve::kernels
