#include "kernels/nccl/device_copy.h"

#include <cuda_runtime.h>

#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"

namespace ringserve::kernels {

struct DeviceCopier::Impl {
  int device = 0;
  std::mutex mu;
  cudaStream_t stream ABSL_GUARDED_BY(mu) = nullptr;
};

absl::StatusOr<std::unique_ptr<DeviceCopier>> DeviceCopier::Create(int device) {
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("a copy stream on CUDA device ", device, ": ", cudaGetErrorString(e)));
  }
  return std::unique_ptr<DeviceCopier>(new DeviceCopier(std::move(impl)));
}

DeviceCopier::DeviceCopier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DeviceCopier::~DeviceCopier() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  cudaSetDevice(impl_->device);
  cudaStreamDestroy(impl_->stream);
}

absl::Status DeviceCopier::ToHost(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, "copying a state to the host");
}

absl::Status DeviceCopier::FromHost(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, "copying a state to the device");
}

absl::Status DeviceCopier::Copy(void* dst, const void* src, size_t bytes, const char* what) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  cudaError_t e = cudaSetDevice(impl_->device);
  if (e == cudaSuccess) e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, impl_->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(impl_->stream);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat(what, " (", bytes, " bytes) on CUDA device ",
                                            impl_->device, ": ", cudaGetErrorString(e)));
  }
  return absl::OkStatus();
}

}  // namespace ringserve::kernels
