#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "common/base/thread_pool.h"
#include "kernels/backend.h"

namespace ringserve::kernels {

// The reference backend: host memory; weights used as stored (bf16, or fp32, read in place from
// the mapped checkpoint, which must outlive them; F16 ones widened to owned fp32 copies) by the
// GEMMs of weight_gemm.h, split over our own thread pool; the kernels of cpu_ops.h.
// A Graph is the list of recorded calls, each holding its arguments by value, run in order by
// Replay; it has the CUDA graph's semantics (pointers are dereferenced when the calls run), so
// the model's graph path runs and is tested here. Owns the vectors and copies it uploads. Not
// thread-safe: one thread drives it at a time.
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
  absl::Status Synchronize() override;

  absl::Status BeginCapture() override;
  absl::StatusOr<std::unique_ptr<Graph>> EndCapture() override;
  int64_t max_capture_rows() const override { return INT64_MAX; }

  absl::StatusOr<Weight> UploadWeight(const base::TensorView& tensor) override;
  absl::StatusOr<Weight> UploadStackedWeight(const std::string& name, const base::TensorView& top,
                                             const base::TensorView& bottom) override;
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
  void SoftmaxAttentionDecode(const SoftmaxDecodeParams& p) override;
  void MoeRoute(const MoeRouteParams& p) override;
  void MoeExperts(const MoeExpertsParams& p) override;
  void Sample(const float* logits, int64_t rows, int64_t vocab, const SamplingParams* params,
              int32_t* ids) override;

 private:
  absl::StatusOr<float*> Widen(const base::TensorView& tensor);
  // While capturing: appends `call` to the recording and returns true (the caller returns).
  template <typename Call>
  bool Recorded(Call&& call) {
    if (!capturing_) return false;
    recording_.emplace_back(std::forward<Call>(call));
    return true;
  }
  // While capturing: fails the capture, since `what` cannot be recorded; returns whether it did.
  bool RefusedInCapture(const char* what);

  base::ThreadPool pool_;
  std::vector<Buffer> owned_;  // uploaded vectors and widened copies
  bool capturing_ = false;
  std::vector<std::function<void()>> recording_;
  absl::Status capture_status_;
};

}  // namespace ringserve::kernels
