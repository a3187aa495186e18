#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/state/format.h"
#include "kernels/nccl/device_copy.h"

namespace ringserve::state {

// StateMemory for states in one CUDA device's memory (the CUDA backend's): the transports stage
// them through host buffers with a kernels::DeviceCopier. Built with RINGSERVE_CUDA (library
// ringserve_state_nccl). Thread-safe.
class DeviceStateMemory : public StateMemory {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceStateMemory>> Create(int device);

  bool in_place() const override { return false; }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) const override {
    return copier_->ToHost(dst, src, bytes);
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) const override {
    return copier_->FromHost(dst, src, bytes);
  }

 private:
  explicit DeviceStateMemory(std::unique_ptr<kernels::DeviceCopier> copier)
      : copier_(std::move(copier)) {}

  const std::unique_ptr<kernels::DeviceCopier> copier_;
};

}  // namespace ringserve::state
