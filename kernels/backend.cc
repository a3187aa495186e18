#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef RINGSERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace ringserve::kernels {

absl::Status CheckStackable(const std::string& name, const base::TensorView& top,
                            const base::TensorView& bottom) {
  if (top.shape.size() != 2 || bottom.shape.size() != 2 || top.shape[1] != bottom.shape[1] ||
      top.dtype != bottom.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot stack '", top.name, "' (", base::DTypeName(top.dtype), ", ", top.shape.size(),
        "-D) and '", bottom.name, "' (", base::DTypeName(bottom.dtype), ", ", bottom.shape.size(),
        "-D) into '", name, "': both must be matrices of one dtype with equal columns"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Weight> Backend::UploadStackedWeight(const std::string& name,
                                                    const base::TensorView& top,
                                                    const base::TensorView& bottom) {
  RETURN_IF_ERROR(CheckStackable(name, top, bottom));
  base::TensorData data{name, top.dtype, {top.shape[0] + bottom.shape[0], top.shape[1]}, {}};
  data.bytes.reserve(top.bytes + bottom.bytes);
  data.bytes.append(reinterpret_cast<const char*>(top.data), top.bytes);
  data.bytes.append(reinterpret_cast<const char*>(bottom.data), bottom.bytes);
  return UploadWeight(base::ViewOf(data));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int threads) {
  if (device == "cpu") return std::unique_ptr<Backend>(new CpuBackend(threads));
  if (device == "cuda") {
#ifdef RINGSERVE_HAVE_CUDA
    return CreateCudaBackend(threads);
#else
    return absl::FailedPreconditionError(
        "device 'cuda' is not available: this build has no CUDA backend (nvcc was not found)");
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("device '", device, "' is not one of cpu, cuda"));
}

}  // namespace ringserve::kernels
