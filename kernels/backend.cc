#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef RINGSERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace ringserve::kernels {

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
