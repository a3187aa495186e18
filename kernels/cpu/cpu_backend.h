#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/base/thread_pool.h"
#include "kernels/backend.h"

namespace ringserve::kernels {

// The reference backend: host memory, fp32 weights (widened from the checkpoint), OpenBLAS
// sgemm on single-threaded calls split over our own thread pool, and the kernels of cpu_ops.h.
// Owns the weights it uploads. Not thread-safe: one thread drives it at a time.
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads);

  std::string Name() const override { return "cpu"; }
  int threads() const { return pool_.num_threads(); }

  absl::StatusOr<Buffer> Allocate(size_t bytes) override;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override;
  void Fill(float* x, float value, int64_t n) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::StatusOr<Weight> UploadWeight(const base::TensorView& tensor) override;
  absl::StatusOr<const float*> UploadVector(const base::TensorView& tensor) override;

  void Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override;
  void Gemm(const GemmParams& p) override;
  void RmsNorm(const RmsNormParams& p) override;
  void Rope(const RopeParams& p) override;
  void SiluMul(const float* gu, int64_t rows, int64_t inter, float* out) override;
  void SigmoidMul(float* x, int64_t ldx, const float* g, int64_t ldg, int64_t rows,
                  int64_t cols) override;
  void Add(float* y, const float* x, int64_t n) override;
  void LinearAttention(const LinearAttentionParams& p) override;
  void LinearAttentionDecode(const LinearDecodeParams& p) override;
  void SoftmaxAttention(const SoftmaxAttentionParams& p) override;
  void MoeRoute(const MoeRouteParams& p) override;
  void MoeExperts(const MoeExpertsParams& p) override;
  void Sample(const float* logits, int64_t rows, int64_t vocab, const SamplingParams* params,
              int32_t* ids) override;

 private:
  absl::StatusOr<float*> Widen(const base::TensorView& tensor);

  base::ThreadPool pool_;
  std::vector<Buffer> owned_;  // uploaded weights
};

}  // namespace ringserve::kernels
