#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"

namespace ringserve::kernels {

// Synchronous copies between host memory and one CUDA device's memory on a stream of their own,
// for threads other than the backend's (the state transports stage device-resident states
// through it). No CUDA types appear here. Thread-safe: copies are serialised.
class DeviceCopier {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceCopier>> Create(int device);
  ~DeviceCopier();
  DeviceCopier(const DeviceCopier&) = delete;
  DeviceCopier& operator=(const DeviceCopier&) = delete;

  absl::Status ToHost(void* dst, const void* src, size_t bytes);
  absl::Status FromHost(void* dst, const void* src, size_t bytes);

 private:
  struct Impl;
  explicit DeviceCopier(std::unique_ptr<Impl> impl);
  absl::Status Copy(void* dst, const void* src, size_t bytes, const char* what);

  std::unique_ptr<Impl> impl_;
};

}  // namespace ringserve::kernels
