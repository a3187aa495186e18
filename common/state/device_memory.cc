#include "common/state/device_memory.h"

#include "common/base/status_macros.h"

namespace ringserve::state {

absl::StatusOr<std::unique_ptr<DeviceStateMemory>> DeviceStateMemory::Create(int device) {
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::DeviceCopier> copier,
                   kernels::DeviceCopier::Create(device));
  return std::unique_ptr<DeviceStateMemory>(new DeviceStateMemory(std::move(copier)));
}

}  // namespace ringserve::state
