#pragma once

// The CUDA backend. This header includes no CUDA header, so that g++-compiled code
// (kernels/backend.cc, tests, the benchmark) can use it; everything CUDA lives in the .cc/.cu
// files of this folder.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace ringserve::kernels {

struct CudaBackendOptions {
  int device = 0;
  // How fp32 data meets bf16 tensor cores (cuBLAS GEMMs of more than skinny_max_rows rows, the
  // MoE cuBLAS path, and Q / probabilities in prefill attention). false: rounded once to bf16,
  // as upstream's bf16 activations (relative error ~2^-9). true: split into hi + lo bf16 halves
  // and multiplied twice (~2^-16, twice the tensor work); used to compare against the CPU.
  bool split_bf16 = false;
  // Gemm up to this many rows runs the fp32 skinny kernel (exact fp32 activations, memory-bound).
  int64_t skinny_max_rows = 8;
  // MoeExperts up to this many tokens keeps expert counts on the device (no host sync, fp32
  // skinny expert kernels); above, counts are read back and cuBLAS runs the expert GEMMs.
  int64_t moe_device_max_tokens = 64;
};

// What Create found on the device.
struct CudaDeviceInfo {
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int sm_count = 0;
  size_t memory_bytes = 0;
  // Whether cublasGemmGroupedBatchedEx (bf16 in, fp32 out) works here; else the MoE cuBLAS path
  // issues one cublasGemmEx per active expert.
  bool grouped_gemm = false;
};

// Backend on one CUDA device: device memory from cudaMalloc (weights sub-allocated from slabs
// and stored as bf16), fp32 activations, one stream, cuBLAS for large GEMMs and the kernels of
// this folder for everything else. Backend methods that return void queue work on the stream;
// the first CUDA, cuBLAS or unsupported-parameter error since the last Synchronize is recorded
// (and logged) and returned by Synchronize, which then clears it. Sample and the MoE cuBLAS path
// wait for the stream. Owns its uploads, scratch and handles. Not thread-safe: one thread drives
// it at a time (each call makes `device` current on the calling thread).
//
// Graphs: BeginCapture starts a thread-local CUDA stream capture and EndCapture instantiates it.
// While capturing, a call that would synchronize, allocate, stage host data or grow scratch
// memory (Allocate, copies from or to the host, uploads, Sample, Synchronize, MoeExperts on its
// cuBLAS path, a first use or growth of a scratch slot) records FailedPrecondition instead, and
// EndCapture returns it. Growing any scratch slot afterwards makes the existing graphs stale:
// their Replay returns FailedPrecondition.
class CudaBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string Name() const override { return "cuda"; }
  const CudaDeviceInfo& info() const;
  const CudaBackendOptions& options() const;

  absl::StatusOr<Buffer> Allocate(size_t bytes) override;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override;
  void Fill(float* x, float value, int64_t n) override;
  absl::Status Synchronize() override;

  absl::Status BeginCapture() override;
  absl::StatusOr<std::unique_ptr<Graph>> EndCapture() override;
  // Above this many tokens MoeExperts needs the host (moe_device_max_tokens).
  int64_t max_capture_rows() const override;

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
  void SoftmaxAttentionDecode(const SoftmaxDecodeParams& p) override;
  void MoeRoute(const MoeRouteParams& p) override;
  void MoeExperts(const MoeExpertsParams& p) override;
  void Sample(const float* logits, int64_t rows, int64_t vocab, const SamplingParams* params,
              int32_t* ids) override;

  // Roofline probes for benchmarks (each synchronizes). Device-to-device copy bandwidth in
  // bytes/s, counting the bytes read and written.
  absl::StatusOr<double> MeasureCopyBandwidth(size_t bytes, int iterations);
  // FLOP/s of cublasGemmEx with bf16 inputs and fp32 output, C[m, n] = A[m, k] B[n, k]^T.
  absl::StatusOr<double> MeasureBf16GemmFlops(int64_t m, int64_t n, int64_t k, int iterations);

 private:
  struct Impl;
  class CudaGraph;
  explicit CudaBackend(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// The "cuda" backend of CreateBackend on device 0 (`threads` is unused: the work runs on the GPU).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int threads);

// Number of CUDA devices; 0 when the driver or runtime reports none or fails.
int CudaDeviceCount();

}  // namespace ringserve::kernels
