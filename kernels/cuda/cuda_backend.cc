#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bf16.h"
#include "common/base/logging.h"
#include "common/base/status_macros.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/linear_attention.cuh"
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/cuda/skinny_gemm.cuh"
#include "kernels/cuda/softmax_attention.cuh"

namespace ringserve::kernels {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
// Pinned, device-readable staging for small host inputs (CopyToDevice sources, sampling
// parameters, grouped-GEMM pointer tables).
constexpr size_t kStageBytes = 8 * kMiB;
constexpr size_t kCublasWorkspaceBytes = 32 * kMiB;
constexpr size_t kMaxSlabBytes = 512 * kMiB;

size_t Align(size_t x, size_t a) { return (x + a - 1) / a * a; }

std::string CudaText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

void FreeDevice(void* p) {
  if (p != nullptr) cudaFree(p);
}

// A device buffer reused across calls and grown on demand. Growing first waits for the stream,
// so no queued work still uses the old memory. Not thread-safe.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { FreeDevice(ptr_); }

  bool Fits(size_t bytes) const { return ptr_ != nullptr && bytes <= size_; }
  size_t size() const { return size_; }

  // At least `bytes` of device memory, or null with *err set.
  void* Get(size_t bytes, cudaStream_t stream, cudaError_t* err) {
    if (ptr_ != nullptr && bytes <= size_) return ptr_;
    if (ptr_ != nullptr) {
      *err = cudaStreamSynchronize(stream);
      FreeDevice(ptr_);
      ptr_ = nullptr;
      size_ = 0;
      if (*err != cudaSuccess) return nullptr;
    }
    const size_t want = Align(std::max(bytes + bytes / 4, kMiB), 256);
    *err = cudaMalloc(&ptr_, want);
    if (*err != cudaSuccess) {
      ptr_ = nullptr;
      return nullptr;
    }
    size_ = want;
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// A pinned, mapped host arena: copies of small host inputs that kernels read directly (or that
// async copies read from) until the next stream synchronization, after which it is reused.
class HostStage {
 public:
  HostStage() = default;
  HostStage(const HostStage&) = delete;
  HostStage& operator=(const HostStage&) = delete;
  ~HostStage() {
    if (host_ != nullptr) cudaFreeHost(host_);
  }

  cudaError_t Init(size_t bytes) {
    cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&host_), bytes,
                                  cudaHostAllocMapped | cudaHostAllocPortable);
    if (e != cudaSuccess) {
      host_ = nullptr;
      return e;
    }
    size_ = bytes;
    return cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_), host_, 0);
  }

  bool Fits(size_t bytes) const { return Align(bytes, 256) <= size_ / 2; }

  // Copies `bytes` of src into the arena (which must fit); returns the host copy and sets
  // *device to its device address. Waits for the stream when the arena is full.
  void* Put(const void* src, size_t bytes, cudaStream_t stream, const void** device,
            cudaError_t* err) {
    const size_t need = Align(std::max<size_t>(bytes, 1), 256);
    if (used_ + need > size_) {
      *err = cudaStreamSynchronize(stream);
      used_ = 0;
    }
    void* host = host_ + used_;
    std::memcpy(host, src, bytes);
    *device = device_ + used_;
    used_ += need;
    return host;
  }

  // Call only when the stream has drained.
  void Reset() { used_ = 0; }

 private:
  char* host_ = nullptr;
  char* device_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
};

// A pinned host buffer for device-to-host results.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  void* Get(size_t bytes, cudaError_t* err) {
    if (ptr_ != nullptr && bytes <= size_) return ptr_;
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    const size_t want = Align(std::max<size_t>(bytes, 4096), 4096);
    *err = cudaHostAlloc(&ptr_, want, cudaHostAllocDefault);
    if (*err != cudaSuccess) {
      ptr_ = nullptr;
      return nullptr;
    }
    size_ = want;
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// One expert GEMM of the MoE cuBLAS path: c[rows, n] = b[rows, k] a[n, k]^T.
struct ExpertGemm {
  const void* a;  // bf16 weight [n, k]
  const void* b;  // bf16 activations [rows, k]
  void* c;        // fp32 [rows, n]
  int n;
  int rows;
  int k;
};

}  // namespace

struct CudaBackend::Impl {
  enum Slot {
    kGemmHi,
    kGemmLo,
    kLinear,
    kAttention,
    kAttentionDecode,
    kMoeIndex,
    kMoeXHi,
    kMoeXLo,
    kMoeGateUp,
    kMoeAct,
    kMoeActHi,
    kMoeActLo,
    kMoeOut,
    kMoePointers,
    kSample,
    kSampleIds,
    kNumSlots,
  };
  // The device copies of one expert list's weight pointers.
  struct ExpertTable {
    std::vector<const void*> host;
    DeviceScratch device;
  };

  CudaBackendOptions options;
  CudaDeviceInfo info;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;
  absl::Status status;
  // Between BeginCapture and EndCapture.
  bool capturing = false;
  // Counts scratch (re)allocations; a graph captured at another count may use freed memory.
  uint64_t scratch_generation = 0;
  HostStage stage;
  PinnedBuffer pinned;
  DeviceScratch scratch[kNumSlots];
  std::map<const std::vector<Weight>*, std::unique_ptr<ExpertTable>> expert_tables;
  std::vector<void*> slabs;
  char* slab_at = nullptr;
  size_t slab_left = 0;
  size_t next_slab_bytes = 32 * kMiB;
  std::vector<void*> dedicated;

  ~Impl() {
    if (capturing) {
      cudaGraph_t graph = nullptr;
      if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph != nullptr) {
        cudaGraphDestroy(graph);
      }
      cudaGetLastError();
    }
    if (stream != nullptr) cudaStreamSynchronize(stream);
    expert_tables.clear();
    for (void* p : slabs) FreeDevice(p);
    for (void* p : dedicated) FreeDevice(p);
    FreeDevice(cublas_workspace);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  void Fail(absl::Status s) {
    if (!status.ok()) return;
    RS_LOG(kError) << "event=cuda_backend_error status=" << base::Quote(s.ToString());
    status = std::move(s);
  }
  bool Ok(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return true;
    Fail(absl::InternalError(absl::StrCat(what, ": ", CudaText(e))));
    return false;
  }
  bool Ok(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    Fail(absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusString(s))));
    return false;
  }
  // Records InvalidArgument "<op>: <detail()>" when !ok; detail is built only then.
  template <typename Detail>
  bool Check(bool ok, const char* op, Detail detail) {
    if (!ok) Fail(absl::InvalidArgumentError(absl::StrCat(op, ": ", detail())));
    return ok;
  }
  bool Check(bool ok, const char* op) {
    return Check(ok, op, [] { return std::string("parameters not supported by the CUDA kernel"); });
  }
  void Enter() { Ok(cudaSetDevice(options.device), "cudaSetDevice"); }

  // OK outside a capture; during one, records and returns FailedPrecondition "<call> is not
  // allowed during graph capture", which EndCapture then returns.
  absl::Status NotCapturing(const char* call) {
    if (!capturing) return absl::OkStatus();
    absl::Status s =
        absl::FailedPreconditionError(absl::StrCat(call, " is not allowed during graph capture"));
    Fail(s);
    return s;
  }

  // At least `bytes` of `buffer`, or null with the error recorded. A (re)allocation makes the
  // graphs captured so far stale, and fails a capture in progress (it would wait for the stream).
  void* GetScratch(DeviceScratch* buffer, size_t bytes, const char* what) {
    if (!buffer->Fits(bytes)) {
      if (capturing) {
        Fail(absl::FailedPreconditionError(absl::StrCat(
            what, ": ", bytes, " bytes of scratch exceed the ", buffer->size(),
            " allocated, which cannot grow during graph capture; run the call once before "
            "capturing it")));
        return nullptr;
      }
      ++scratch_generation;
    }
    cudaError_t e = cudaSuccess;
    void* p = buffer->Get(bytes, stream, &e);
    if (p == nullptr) {
      Fail(absl::ResourceExhaustedError(
          absl::StrCat(what, ": cannot allocate ", bytes, " bytes of scratch: ", CudaText(e))));
    }
    return p;
  }

  void* Scratch(Slot slot, size_t bytes, const char* what) {
    return GetScratch(&scratch[slot], bytes, what);
  }

  absl::StatusOr<void*> AllocWeight(size_t bytes) {
    bytes = Align(std::max<size_t>(bytes, 1), 256);
    if (bytes > kMaxSlabBytes / 4) {
      void* p = nullptr;
      cudaError_t e = cudaMalloc(&p, bytes);
      if (e != cudaSuccess) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cannot allocate ", bytes, " bytes of device memory: ", CudaText(e)));
      }
      dedicated.push_back(p);
      return p;
    }
    if (bytes > slab_left) {
      const size_t size = std::max(next_slab_bytes, bytes);
      void* p = nullptr;
      cudaError_t e = cudaMalloc(&p, size);
      if (e != cudaSuccess) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cannot allocate a weight slab of ", size, " bytes: ", CudaText(e)));
      }
      slabs.push_back(p);
      slab_at = static_cast<char*>(p);
      slab_left = size;
      next_slab_bytes = std::min(next_slab_bytes * 2, kMaxSlabBytes);
    }
    void* p = slab_at;
    slab_at += bytes;
    slab_left -= bytes;
    return p;
  }

  // y[m, n] (+)= x[m, k] w[n, k]^T with bf16 x and w, fp32 y and accumulation.
  void GemmBf16(const void* w, int64_t n, int64_t k, const void* x, int64_t m, float* y,
                int64_t ldy, float beta) {
    const float alpha = 1.0f;
    Ok(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                    static_cast<int>(k), &alpha, w, CUDA_R_16BF, static_cast<int>(k), x,
                    CUDA_R_16BF, static_cast<int>(k), &beta, y, CUDA_R_32F, static_cast<int>(ldy),
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
       "cublasGemmEx");
  }

  void ExpertGemms(const std::vector<ExpertGemm>& gemms, float beta) {
    if (gemms.empty()) return;
    if (!info.grouped_gemm) {
      for (const ExpertGemm& g : gemms) {
        GemmBf16(g.a, g.n, g.k, g.b, g.rows, static_cast<float*>(g.c), g.n, beta);
      }
      return;
    }
    const int count = static_cast<int>(gemms.size());
    std::vector<cublasOperation_t> trans_a(count, CUBLAS_OP_T), trans_b(count, CUBLAS_OP_N);
    std::vector<int> m(count), n(count), k(count), group_size(count, 1);
    std::vector<float> alpha(count, 1.0f), betas(count, beta);
    std::vector<const void*> pointers(3 * count);
    for (int i = 0; i < count; ++i) {
      m[i] = gemms[i].n;
      n[i] = gemms[i].rows;
      k[i] = gemms[i].k;
      pointers[i] = gemms[i].a;
      pointers[count + i] = gemms[i].b;
      pointers[2 * count + i] = gemms[i].c;
    }
    void* dev = Scratch(kMoePointers, pointers.size() * sizeof(void*), "MoeExperts");
    if (dev == nullptr) return;
    const void* staged = nullptr;
    cudaError_t e = cudaSuccess;
    const size_t bytes = pointers.size() * sizeof(void*);
    const void* src = stage.Fits(bytes) ? stage.Put(pointers.data(), bytes, stream, &staged, &e)
                                        : static_cast<const void*>(pointers.data());
    if (!Ok(e, "MoeExperts staging") ||
        !Ok(cudaMemcpyAsync(dev, src, bytes, cudaMemcpyHostToDevice, stream),
            "MoeExperts pointers")) {
      return;
    }
    const void* const* ptrs = static_cast<const void* const*>(dev);
    Ok(cublasGemmGroupedBatchedEx(cublas, trans_a.data(), trans_b.data(), m.data(), n.data(),
                                  k.data(), alpha.data(), ptrs, CUDA_R_16BF, k.data(), ptrs + count,
                                  CUDA_R_16BF, k.data(), betas.data(),
                                  const_cast<void* const*>(ptrs + 2 * count), CUDA_R_32F, m.data(),
                                  count, group_size.data(), CUBLAS_COMPUTE_32F),
       "cublasGemmGroupedBatchedEx");
  }

  // Device array of the experts' weight pointers (rebuilt when the list changes).
  const uint16_t* const* ExpertPointers(const std::vector<Weight>* weights) {
    std::unique_ptr<ExpertTable>& table = expert_tables[weights];
    if (table == nullptr) table = std::make_unique<ExpertTable>();
    bool same = table->host.size() == weights->size();
    for (size_t i = 0; same && i < weights->size(); ++i)
      same = table->host[i] == (*weights)[i].data;
    void* dev =
        GetScratch(&table->device, weights->size() * sizeof(void*), "MoeExperts pointer table");
    if (dev == nullptr) return nullptr;
    if (!same) {
      if (!NotCapturing("MoeExperts with expert weights not used before the capture").ok()) {
        return nullptr;
      }
      table->host.clear();
      for (const Weight& w : *weights) table->host.push_back(w.data);
      // Stream-ordered after every earlier reader of the table.
      if (!Ok(cudaMemcpyAsync(dev, table->host.data(), table->host.size() * sizeof(void*),
                              cudaMemcpyHostToDevice, stream),
              "MoeExperts pointer table")) {
        table->host.clear();
        return nullptr;
      }
    }
    return static_cast<const uint16_t* const*>(dev);
  }

  // Whether cublasGemmGroupedBatchedEx computes two 16x16x16 bf16 -> fp32 products of ones.
  bool ProbeGroupedGemm() {
    constexpr int kN = 16;
    std::vector<uint16_t> ones(kN * kN, 0x3f80);
    void* a = nullptr;
    void* c = nullptr;
    void* ptrs = nullptr;
    bool ok = cudaMalloc(&a, ones.size() * 2) == cudaSuccess &&
              cudaMalloc(&c, 2 * kN * kN * sizeof(float)) == cudaSuccess &&
              cudaMalloc(&ptrs, 6 * sizeof(void*)) == cudaSuccess;
    if (ok) {
      char* cc = static_cast<char*>(c);
      const void* host_ptrs[6] = {a, a, a, a, cc, cc + kN * kN * sizeof(float)};
      ok = cudaMemcpyAsync(a, ones.data(), ones.size() * 2, cudaMemcpyHostToDevice, stream) ==
               cudaSuccess &&
           cudaMemcpyAsync(ptrs, host_ptrs, sizeof(host_ptrs), cudaMemcpyHostToDevice, stream) ==
               cudaSuccess;
    }
    if (ok) {
      const cublasOperation_t ta[2] = {CUBLAS_OP_T, CUBLAS_OP_T};
      const cublasOperation_t tb[2] = {CUBLAS_OP_N, CUBLAS_OP_N};
      const int dims[2] = {kN, kN};
      const int sizes[2] = {1, 1};
      const float alpha[2] = {1.0f, 1.0f};
      const float beta[2] = {0.0f, 0.0f};
      const void* const* p = static_cast<const void* const*>(ptrs);
      ok = cublasGemmGroupedBatchedEx(cublas, ta, tb, dims, dims, dims, alpha, p, CUDA_R_16BF, dims,
                                      p + 2, CUDA_R_16BF, dims, beta,
                                      const_cast<void* const*>(p + 4), CUDA_R_32F, dims, 2, sizes,
                                      CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS &&
           cudaStreamSynchronize(stream) == cudaSuccess;
    }
    if (ok) {
      std::vector<float> out(2 * kN * kN);
      ok = cudaMemcpyAsync(out.data(), c, out.size() * sizeof(float), cudaMemcpyDeviceToHost,
                           stream) == cudaSuccess &&
           cudaStreamSynchronize(stream) == cudaSuccess;
      for (float v : out) ok = ok && v == static_cast<float>(kN);
    }
    cudaGetLastError();
    FreeDevice(a);
    FreeDevice(c);
    FreeDevice(ptrs);
    return ok;
  }
};

// A graph instantiated from a capture of the backend's stream: owns the executable graph and
// remembers the scratch generation it was captured at. Must not outlive its backend. Not
// thread-safe (like the backend).
class CudaBackend::CudaGraph : public Graph {
 public:
  CudaGraph(Impl* impl, cudaGraphExec_t exec, uint64_t generation)
      : impl_(impl), exec_(exec), generation_(generation) {}
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph() override {
    impl_->Enter();
    cudaGraphExecDestroy(exec_);
  }

  absl::Status Replay() override {
    Impl& im = *impl_;
    im.Enter();
    RETURN_IF_ERROR(im.NotCapturing("Replay"));
    if (generation_ != im.scratch_generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "graph captured at scratch generation ", generation_, " but the backend is at ",
          im.scratch_generation, ": scratch memory it uses was reallocated; capture again"));
    }
    const cudaError_t e = cudaGraphLaunch(exec_, im.stream);
    if (!im.Ok(e, "cudaGraphLaunch")) {
      return absl::InternalError(absl::StrCat("cudaGraphLaunch: ", CudaText(e)));
    }
    return absl::OkStatus();
  }

 private:
  Impl* impl_;
  cudaGraphExec_t exec_;
  uint64_t generation_;
};

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

const CudaDeviceInfo& CudaBackend::info() const { return impl_->info; }
const CudaBackendOptions& CudaBackend::options() const { return impl_->options; }

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const CudaBackendOptions& options) {
  const int devices = CudaDeviceCount();
  if (options.device < 0 || options.device >= devices) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", options.device,
                                                      " does not exist; this machine has ", devices,
                                                      " CUDA devices"));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto fail = [](const char* what, cudaError_t e) {
    return absl::InternalError(absl::StrCat(what, ": ", CudaText(e)));
  };
  cudaError_t e = cudaSetDevice(options.device);
  if (e != cudaSuccess) return fail("cudaSetDevice", e);
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, options.device);
  if (e != cudaSuccess) return fail("cudaGetDeviceProperties", e);
  impl->info.name = prop.name;
  impl->info.compute_major = prop.major;
  impl->info.compute_minor = prop.minor;
  impl->info.sm_count = prop.multiProcessorCount;
  impl->info.memory_bytes = prop.totalGlobalMem;
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", options.device, " (", prop.name, ") has compute capability ", prop.major,
        ".", prop.minor, "; the CUDA backend needs 8.0 or newer (bf16 tensor cores)"));
  }
  constexpr size_t kSmemNeeded = 140 * 1024;
  if (prop.sharedMemPerBlockOptin < kSmemNeeded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", options.device, " (", prop.name, ") allows ", prop.sharedMemPerBlockOptin,
        " bytes of shared memory per block; the attention kernels need ", kSmemNeeded));
  }
  e = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return fail("cudaStreamCreate", e);
  if (cublasCreate(&impl->cublas) != CUBLAS_STATUS_SUCCESS) {
    impl->cublas = nullptr;
    return absl::InternalError("cublasCreate failed");
  }
  e = cudaMalloc(&impl->cublas_workspace, kCublasWorkspaceBytes);
  if (e != cudaSuccess) return fail("cudaMalloc (cuBLAS workspace)", e);
  if (cublasSetStream(impl->cublas, impl->stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(impl->cublas, impl->cublas_workspace, kCublasWorkspaceBytes) !=
          CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cublasSetStream / cublasSetWorkspace failed");
  }
  e = impl->stage.Init(kStageBytes);
  if (e != cudaSuccess) return fail("cudaHostAlloc (staging)", e);
  e = cuda::InitLinearPrefillKernels();
  if (e != cudaSuccess) return fail("linear attention kernel setup", e);
  e = cuda::InitSoftmaxAttentionKernels();
  if (e != cudaSuccess) return fail("softmax attention kernel setup", e);
  impl->info.grouped_gemm = impl->ProbeGroupedGemm();
  RS_LOG(kInfo) << "event=cuda_backend_ready device=" << base::Quote(impl->info.name)
                << " sms=" << impl->info.sm_count << " memory_bytes=" << impl->info.memory_bytes
                << " grouped_gemm=" << (impl->info.grouped_gemm ? "true" : "false")
                << " split_bf16=" << (options.split_bf16 ? "true" : "false");
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

absl::StatusOr<Buffer> CudaBackend::Allocate(size_t bytes) {
  impl_->Enter();
  RETURN_IF_ERROR(impl_->NotCapturing("Allocate"));
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of device memory: ", CudaText(e)));
  }
  return Buffer(p, &FreeDevice);
}

void CudaBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  Impl& im = *impl_;
  im.Enter();
  if (!im.NotCapturing("CopyToDevice").ok() || bytes == 0) return;
  const void* from = src;
  if (im.stage.Fits(bytes)) {
    const void* device = nullptr;
    cudaError_t e = cudaSuccess;
    from = im.stage.Put(src, bytes, im.stream, &device, &e);
    im.Ok(e, "CopyToDevice staging");
  }
  // From pageable memory the call returns once the source has been read.
  im.Ok(cudaMemcpyAsync(dst, from, bytes, cudaMemcpyHostToDevice, im.stream), "CopyToDevice");
}

void CudaBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  Impl& im = *impl_;
  im.Enter();
  if (!im.NotCapturing("CopyToHost").ok() || bytes == 0) return;
  im.Ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, im.stream), "CopyToHost");
}

void CudaBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  Impl& im = *impl_;
  im.Enter();
  if (bytes == 0) return;
  im.Ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, im.stream),
        "CopyDeviceToDevice");
}

void CudaBackend::Fill(float* x, float value, int64_t n) {
  Impl& im = *impl_;
  im.Enter();
  const cuda::FillParams p{x, value, n};
  if (im.Check(cuda::CanImplement(p), "Fill")) im.Ok(cuda::Launch(p, im.stream), "Fill");
}

absl::Status CudaBackend::Synchronize() {
  Impl& im = *impl_;
  im.Enter();
  RETURN_IF_ERROR(im.NotCapturing("Synchronize"));
  im.Ok(cudaStreamSynchronize(im.stream), "cudaStreamSynchronize");
  im.Ok(cudaGetLastError(), "CUDA");
  im.stage.Reset();
  return std::exchange(im.status, absl::OkStatus());
}

absl::Status CudaBackend::BeginCapture() {
  Impl& im = *impl_;
  im.Enter();
  if (im.capturing) return absl::FailedPreconditionError("BeginCapture: already capturing");
  if (!im.status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("BeginCapture: an earlier error awaits Synchronize: ", im.status.ToString()));
  }
  const cudaError_t e = cudaStreamBeginCapture(im.stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError(absl::StrCat("cudaStreamBeginCapture: ", CudaText(e)));
  }
  im.capturing = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Graph>> CudaBackend::EndCapture() {
  Impl& im = *impl_;
  im.Enter();
  if (!im.capturing) return absl::FailedPreconditionError("EndCapture without BeginCapture");
  im.capturing = false;
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(im.stream, &graph);
  absl::Status recorded = std::exchange(im.status, absl::OkStatus());
  if (recorded.ok() && e != cudaSuccess) {
    recorded = absl::InternalError(absl::StrCat("cudaStreamEndCapture: ", CudaText(e)));
  }
  cudaGraphExec_t exec = nullptr;
  if (recorded.ok()) {
    e = cudaGraphInstantiate(&exec, graph, 0);
    if (e != cudaSuccess) {
      exec = nullptr;
      recorded = absl::InternalError(absl::StrCat("cudaGraphInstantiate: ", CudaText(e)));
    }
  }
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (!recorded.ok()) {
    cudaGetLastError();
    return recorded;
  }
  return std::unique_ptr<Graph>(new CudaGraph(&im, exec, im.scratch_generation));
}

int64_t CudaBackend::max_capture_rows() const { return impl_->options.moe_device_max_tokens; }

absl::StatusOr<Weight> CudaBackend::UploadWeight(const base::TensorView& tensor) {
  Impl& im = *impl_;
  im.Enter();
  RETURN_IF_ERROR(im.NotCapturing("UploadWeight"));
  if (tensor.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' is not a matrix"));
  }
  const int64_t n = tensor.NumElements();
  const size_t bytes = static_cast<size_t>(n) * sizeof(uint16_t);
  std::vector<uint16_t> converted;
  const void* src = tensor.data;
  switch (tensor.dtype) {
    case base::DType::kBF16:
      break;
    case base::DType::kF32: {
      converted.resize(n);
      const float* in = reinterpret_cast<const float*>(tensor.data);
      for (int64_t i = 0; i < n; ++i) converted[i] = base::FloatToBf16(in[i]);
      src = converted.data();
      break;
    }
    case base::DType::kF16: {
      converted.resize(n);
      const uint16_t* in = reinterpret_cast<const uint16_t*>(tensor.data);
      for (int64_t i = 0; i < n; ++i) converted[i] = base::FloatToBf16(base::F16ToFloat(in[i]));
      src = converted.data();
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' has dtype ",
                                                     base::DTypeName(tensor.dtype),
                                                     "; expected BF16, F16 or F32"));
  }
  ASSIGN_OR_RETURN(void* dst, im.AllocWeight(bytes));
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, im.stream);
  if (e == cudaSuccess && !converted.empty()) e = cudaStreamSynchronize(im.stream);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("uploading tensor '", tensor.name, "': ", CudaText(e)));
  }
  return Weight{dst, tensor.shape[0], tensor.shape[1], base::DType::kBF16};
}

absl::StatusOr<const float*> CudaBackend::UploadVector(const base::TensorView& tensor) {
  Impl& im = *impl_;
  im.Enter();
  RETURN_IF_ERROR(im.NotCapturing("UploadVector"));
  const int64_t n = tensor.NumElements();
  std::vector<float> widened(n);
  switch (tensor.dtype) {
    case base::DType::kF32:
      std::memcpy(widened.data(), tensor.data, static_cast<size_t>(n) * sizeof(float));
      break;
    case base::DType::kBF16: {
      const uint16_t* in = reinterpret_cast<const uint16_t*>(tensor.data);
      for (int64_t i = 0; i < n; ++i) widened[i] = base::Bf16ToFloat(in[i]);
      break;
    }
    case base::DType::kF16: {
      const uint16_t* in = reinterpret_cast<const uint16_t*>(tensor.data);
      for (int64_t i = 0; i < n; ++i) widened[i] = base::F16ToFloat(in[i]);
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' has dtype ",
                                                     base::DTypeName(tensor.dtype),
                                                     "; expected BF16, F16 or F32"));
  }
  ASSIGN_OR_RETURN(void* dst, im.AllocWeight(static_cast<size_t>(n) * sizeof(float)));
  cudaError_t e = cudaMemcpyAsync(dst, widened.data(), static_cast<size_t>(n) * sizeof(float),
                                  cudaMemcpyHostToDevice, im.stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(im.stream);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("uploading tensor '", tensor.name, "': ", CudaText(e)));
  }
  return static_cast<const float*>(dst);
}

void CudaBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  Impl& im = *impl_;
  im.Enter();
  if (n <= 0) return;
  if (!im.Check(table.dtype == base::DType::kBF16, "Embed (table is not bf16)")) return;
  const cuda::EmbedParams p{static_cast<const uint16_t*>(table.data), table.cols, ids, n, out};
  if (im.Check(cuda::CanImplement(p), "Embed")) im.Ok(cuda::Launch(p, im.stream), "Embed");
}

void CudaBackend::Gemm(const GemmParams& p) {
  Impl& im = *impl_;
  im.Enter();
  const Weight& w = *p.w;
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  const bool ok = w.dtype == base::DType::kBF16 && p.m >= 0 && p.ldx >= k && p.ldy >= n &&
                  n < (1ll << 31) && k < (1ll << 31) && p.m < (1ll << 31);
  if (!im.Check(ok, "Gemm", [&] {
        return absl::StrCat("weight ", base::DTypeName(w.dtype), " [", n, ", ", k, "], m ", p.m,
                            ", ldx ", p.ldx, ", ldy ", p.ldy,
                            "; needs a bf16 weight, ldx >= k, ldy >= n and sizes below 2^31");
      })) {
    return;
  }
  if (p.m == 0) return;
  if (p.m <= im.options.skinny_max_rows) {
    const cuda::SkinnyGemmParams sp{
        p.x, p.ldx, p.m, static_cast<const uint16_t*>(w.data), n, k, p.y, p.ldy, p.accumulate};
    if (cuda::CanImplement(sp)) {
      im.Ok(cuda::Launch(sp, im.stream), "Gemm (skinny)");
      return;
    }
  }
  const size_t bytes = static_cast<size_t>(p.m * k) * sizeof(uint16_t);
  auto* hi = static_cast<uint16_t*>(im.Scratch(Impl::kGemmHi, bytes, "Gemm"));
  uint16_t* lo = nullptr;
  if (im.options.split_bf16) lo = static_cast<uint16_t*>(im.Scratch(Impl::kGemmLo, bytes, "Gemm"));
  if (hi == nullptr || (im.options.split_bf16 && lo == nullptr)) return;
  const cuda::ToBf16Params cp{p.x, p.ldx, p.m, k, hi, lo};
  if (!im.Check(cuda::CanImplement(cp), "Gemm (bf16 conversion)") ||
      !im.Ok(cuda::Launch(cp, im.stream), "Gemm (bf16 conversion)")) {
    return;
  }
  im.GemmBf16(w.data, n, k, hi, p.m, p.y, p.ldy, p.accumulate ? 1.0f : 0.0f);
  if (lo != nullptr) im.GemmBf16(w.data, n, k, lo, p.m, p.y, p.ldy, 1.0f);
}

void CudaBackend::RmsNorm(const RmsNormParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (im.Check(cuda::CanImplement(p), "RmsNorm")) im.Ok(cuda::Launch(p, im.stream), "RmsNorm");
}

void CudaBackend::Rope(const RopeParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (im.Check(cuda::CanImplement(p), "Rope")) im.Ok(cuda::Launch(p, im.stream), "Rope");
}

void CudaBackend::SiluMul(const float* gu, int64_t rows, int64_t inter, float* out) {
  Impl& im = *impl_;
  im.Enter();
  const cuda::SiluMulParams p{gu, rows, inter, out};
  if (im.Check(cuda::CanImplement(p), "SiluMul")) im.Ok(cuda::Launch(p, im.stream), "SiluMul");
}

void CudaBackend::SigmoidMul(float* x, int64_t ldx, const float* g, int64_t ldg, int64_t rows,
                             int64_t cols) {
  Impl& im = *impl_;
  im.Enter();
  const cuda::SigmoidMulParams p{x, ldx, g, ldg, rows, cols};
  if (im.Check(cuda::CanImplement(p), "SigmoidMul")) {
    im.Ok(cuda::Launch(p, im.stream), "SigmoidMul");
  }
}

void CudaBackend::Add(float* y, const float* x, int64_t n) {
  Impl& im = *impl_;
  im.Enter();
  const cuda::AddParams p{y, x, n};
  if (im.Check(cuda::CanImplement(p), "Add")) im.Ok(cuda::Launch(p, im.stream), "Add");
}

void CudaBackend::LinearAttention(const LinearAttentionParams& p) {
  Impl& im = *impl_;
  im.Enter();
  cuda::LinearPrefillParams lp;
  lp.attn = p;
  const size_t bytes = cuda::PlanLinearPrefill(&lp, im.info.sm_count);
  if (bytes > 0) {
    lp.workspace = static_cast<float*>(im.Scratch(Impl::kLinear, bytes, "LinearAttention"));
    if (lp.workspace == nullptr) return;
  }
  if (im.Check(cuda::CanImplement(lp), "LinearAttention", [&] {
        return absl::StrCat("head_dim ", p.head_dim, ", heads ", p.heads, ", ld ", p.ld,
                            ", tokens ", p.tokens,
                            "; needs head_dim 32, 64 or 128 and ld >= heads * head_dim");
      })) {
    im.Ok(cuda::Launch(lp, im.stream), "LinearAttention");
  }
}

void CudaBackend::LinearAttentionDecode(const LinearDecodeParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (p.batch <= 0) return;
  if (im.Check(cuda::CanImplement(p), "LinearAttentionDecode", [&] {
        return absl::StrCat("head_dim ", p.head_dim, ", heads ", p.heads, ", batch ", p.batch,
                            "; needs a power-of-two head_dim in [16, 256], batch <= 65535 and "
                            "non-null pointers");
      })) {
    im.Ok(cuda::Launch(p, im.stream), "LinearAttentionDecode");
  }
}

void CudaBackend::SoftmaxAttention(const SoftmaxAttentionParams& p) {
  Impl& im = *impl_;
  im.Enter();
  cuda::SoftmaxAttentionCudaParams sp;
  sp.attn = p;
  sp.split_bf16 = im.options.split_bf16;
  const size_t bytes = cuda::PlanSoftmaxAttention(&sp, im.info.sm_count);
  if (bytes > 0) {
    sp.workspace = static_cast<float*>(im.Scratch(Impl::kAttention, bytes, "SoftmaxAttention"));
    if (sp.workspace == nullptr) return;
  }
  if (im.Check(cuda::CanImplement(sp), "SoftmaxAttention", [&] {
        return absl::StrCat("head_dim ", p.head_dim, ", heads ", p.heads, "/", p.kv_heads,
                            ", past ", p.past, " + tokens ", p.tokens, " vs capacity ", p.capacity,
                            ", ld ", p.ld,
                            "; needs head_dim 32, 64 or 128, a query group dividing 64 and "
                            "past + tokens <= capacity");
      })) {
    im.Ok(cuda::Launch(sp, im.stream), "SoftmaxAttention");
  }
}

void CudaBackend::SoftmaxAttentionDecode(const SoftmaxDecodeParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (p.batch == 0) return;
  cuda::SoftmaxDecodeCudaParams dp;
  dp.step = p;
  const size_t bytes = cuda::PlanSoftmaxDecode(&dp, im.info.sm_count);
  if (bytes > 0) {
    dp.workspace =
        static_cast<float*>(im.Scratch(Impl::kAttentionDecode, bytes, "SoftmaxAttentionDecode"));
    if (dp.workspace == nullptr) return;
  }
  if (im.Check(cuda::CanImplement(dp), "SoftmaxAttentionDecode", [&] {
        return absl::StrCat("head_dim ", p.head_dim, ", heads ", p.heads, "/", p.kv_heads,
                            ", batch ", p.batch, ", ld ", p.ld,
                            "; needs head_dim 32, 64 or 128, a query group of at most 32, "
                            "batch <= 65535 and non-null pointers");
      })) {
    im.Ok(cuda::Launch(dp, im.stream), "SoftmaxAttentionDecode");
  }
}

void CudaBackend::MoeRoute(const MoeRouteParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (im.Check(cuda::CanImplement(p), "MoeRoute", [&] {
        return absl::StrCat("experts ", p.experts, ", groups ", p.groups, ", top_groups ",
                            p.top_groups, ", top_k ", p.top_k,
                            "; needs experts <= 1024, groups <= 32 dividing experts, and top_k "
                            "<= the experts of the top groups");
      })) {
    im.Ok(cuda::Launch(p, im.stream), "MoeRoute");
  }
}

void CudaBackend::MoeExperts(const MoeExpertsParams& p) {
  Impl& im = *impl_;
  im.Enter();
  if (p.tokens <= 0) return;
  const int64_t experts = static_cast<int64_t>(p.gate_up->size());
  bool ok = experts > 0 && static_cast<int64_t>(p.down->size()) == experts && p.top_k > 0;
  const int64_t inter = ok ? (*p.gate_up)[0].rows / 2 : 0;
  for (int64_t e = 0; ok && e < experts; ++e) {
    const Weight& gu = (*p.gate_up)[e];
    const Weight& dn = (*p.down)[e];
    ok = gu.dtype == base::DType::kBF16 && dn.dtype == base::DType::kBF16 && gu.rows == 2 * inter &&
         gu.cols == p.hidden && dn.rows == p.hidden && dn.cols == inter;
  }
  if (!im.Check(ok && inter > 0, "MoeExperts", [&] {
        return absl::StrCat(experts, " gate_up and ", p.down->size(), " down weights, hidden ",
                            p.hidden,
                            "; needs equal counts of bf16 [2I, hidden] and [hidden, I] "
                            "weights of one shape");
      })) {
    return;
  }
  if (p.tokens > im.options.moe_device_max_tokens &&
      !im.NotCapturing("MoeExperts with more tokens than moe_device_max_tokens").ok()) {
    return;
  }
  const int64_t slots = p.tokens * p.top_k;

  // Permutation of the slots by expert.
  const size_t index_ints = static_cast<size_t>(4 * experts + 1 + 2 * slots);
  auto* index = static_cast<int32_t*>(
      im.Scratch(Impl::kMoeIndex, index_ints * sizeof(int32_t), "MoeExperts"));
  if (index == nullptr) return;
  int32_t* perm = index + 4 * experts + 1;
  const cuda::MoePermuteParams mp{.expert_ids = p.expert_ids,
                                  .slots = slots,
                                  .experts = experts,
                                  .counts = index,
                                  .offsets = index + experts,
                                  .cursor = index + 2 * experts,
                                  .active = index + 3 * experts,
                                  .num_active = index + 4 * experts,
                                  .perm = perm,
                                  .pos_of_slot = perm + slots};
  if (!im.Check(cuda::CanImplement(mp), "MoeExperts (permutation)") ||
      !im.Ok(cuda::Launch(mp, im.stream), "MoeExperts (permutation)")) {
    return;
  }
  auto* out = static_cast<float*>(im.Scratch(
      Impl::kMoeOut, static_cast<size_t>(slots * p.hidden) * sizeof(float), "MoeExperts"));
  auto* act = static_cast<float*>(
      im.Scratch(Impl::kMoeAct, static_cast<size_t>(slots * inter) * sizeof(float), "MoeExperts"));
  if (out == nullptr || act == nullptr) return;

  bool on_device = p.tokens <= im.options.moe_device_max_tokens;
  const int64_t max_active = std::min(experts, slots);
  cuda::MoeSkinnyParams gate_up{.x = p.x,
                                .ldx = p.hidden,
                                .x_rows = mp.perm,
                                .x_div = p.top_k,
                                .w = nullptr,
                                .n = inter,
                                .k = p.hidden,
                                .swiglu = true,
                                .counts = mp.counts,
                                .offsets = mp.offsets,
                                .active = mp.active,
                                .num_active = mp.num_active,
                                .max_active = max_active,
                                .y = act,
                                .ldy = inter};
  cuda::MoeSkinnyParams down{.x = act,
                             .ldx = inter,
                             .x_rows = nullptr,
                             .x_div = 1,
                             .w = nullptr,
                             .n = p.hidden,
                             .k = inter,
                             .swiglu = false,
                             .counts = mp.counts,
                             .offsets = mp.offsets,
                             .active = mp.active,
                             .num_active = mp.num_active,
                             .max_active = max_active,
                             .y = out,
                             .ldy = p.hidden};
  if (on_device) {
    gate_up.w = im.ExpertPointers(p.gate_up);
    down.w = im.ExpertPointers(p.down);
    if (gate_up.w == nullptr || down.w == nullptr) return;
    on_device = cuda::CanImplement(gate_up) && cuda::CanImplement(down);
  }
  if (on_device) {
    if (!im.Ok(cuda::Launch(gate_up, im.stream), "MoeExperts (gate_up)") ||
        !im.Ok(cuda::Launch(down, im.stream), "MoeExperts (down)")) {
      return;
    }
  } else {
    // Expert counts to the host, then cuBLAS over each active expert's rows.
    if (!im.NotCapturing("MoeExperts with expert shapes the device kernels lack").ok()) return;
    cudaError_t e = cudaSuccess;
    auto* counts = static_cast<int32_t*>(im.pinned.Get(experts * sizeof(int32_t), &e));
    if (!im.Ok(e, "MoeExperts (pinned counts)") ||
        !im.Ok(cudaMemcpyAsync(counts, mp.counts, experts * sizeof(int32_t), cudaMemcpyDeviceToHost,
                               im.stream),
               "MoeExperts (counts)") ||
        !im.Ok(cudaStreamSynchronize(im.stream), "MoeExperts (counts)")) {
      return;
    }
    const bool split = im.options.split_bf16;
    const size_t x_bytes = static_cast<size_t>(slots * p.hidden) * sizeof(uint16_t);
    const size_t a_bytes = static_cast<size_t>(slots * inter) * sizeof(uint16_t);
    auto* x_hi = static_cast<uint16_t*>(im.Scratch(Impl::kMoeXHi, x_bytes, "MoeExperts"));
    auto* x_lo =
        split ? static_cast<uint16_t*>(im.Scratch(Impl::kMoeXLo, x_bytes, "MoeExperts")) : nullptr;
    auto* gu_out = static_cast<float*>(im.Scratch(
        Impl::kMoeGateUp, static_cast<size_t>(slots * 2 * inter) * sizeof(float), "MoeExperts"));
    auto* a_hi = static_cast<uint16_t*>(im.Scratch(Impl::kMoeActHi, a_bytes, "MoeExperts"));
    auto* a_lo = split ? static_cast<uint16_t*>(im.Scratch(Impl::kMoeActLo, a_bytes, "MoeExperts"))
                       : nullptr;
    if (x_hi == nullptr || gu_out == nullptr || a_hi == nullptr ||
        (split && (x_lo == nullptr || a_lo == nullptr))) {
      return;
    }
    const cuda::ToBf16Params xc{p.x, p.hidden, slots, p.hidden, x_hi, x_lo, mp.perm, p.top_k};
    if (!im.Check(cuda::CanImplement(xc), "MoeExperts (bf16 conversion)") ||
        !im.Ok(cuda::Launch(xc, im.stream), "MoeExperts (bf16 conversion)")) {
      return;
    }
    std::vector<ExpertGemm> up_hi, up_lo, down_hi, down_lo;
    int64_t offset = 0;
    for (int64_t e2 = 0; e2 < experts; ++e2) {
      const int rows = counts[e2];
      if (rows > 0) {
        const int i = static_cast<int>(inter);
        const int h = static_cast<int>(p.hidden);
        up_hi.push_back({(*p.gate_up)[e2].data, x_hi + offset * p.hidden,
                         gu_out + offset * 2 * inter, 2 * i, rows, h});
        down_hi.push_back(
            {(*p.down)[e2].data, a_hi + offset * inter, out + offset * p.hidden, h, rows, i});
        if (split) {
          up_lo.push_back({(*p.gate_up)[e2].data, x_lo + offset * p.hidden,
                           gu_out + offset * 2 * inter, 2 * i, rows, h});
          down_lo.push_back(
              {(*p.down)[e2].data, a_lo + offset * inter, out + offset * p.hidden, h, rows, i});
        }
      }
      offset += rows;
    }
    im.ExpertGemms(up_hi, 0.0f);
    im.ExpertGemms(up_lo, 1.0f);
    const cuda::SiluMulParams sm{gu_out, slots, inter, act};
    const cuda::ToBf16Params ac{act, inter, slots, inter, a_hi, a_lo};
    if (!im.Check(cuda::CanImplement(sm) && cuda::CanImplement(ac), "MoeExperts (activation)") ||
        !im.Ok(cuda::Launch(sm, im.stream), "MoeExperts (activation)") ||
        !im.Ok(cuda::Launch(ac, im.stream), "MoeExperts (activation)")) {
      return;
    }
    im.ExpertGemms(down_hi, 0.0f);
    im.ExpertGemms(down_lo, 1.0f);
  }
  const cuda::MoeCombineParams cp{out, mp.pos_of_slot, p.weights, p.tokens, p.top_k, p.hidden, p.y};
  if (im.Check(cuda::CanImplement(cp), "MoeExperts (combine)")) {
    im.Ok(cuda::Launch(cp, im.stream), "MoeExperts (combine)");
  }
}

void CudaBackend::Sample(const float* logits, int64_t rows, int64_t vocab,
                         const SamplingParams* params, int32_t* ids) {
  Impl& im = *impl_;
  im.Enter();
  if (!im.NotCapturing("Sample").ok() || rows <= 0) return;
  std::vector<int32_t> sample_rows;
  for (int64_t r = 0; r < rows; ++r) {
    if (params[r].temperature > 0.0f && params[r].top_k != 1)
      sample_rows.push_back(static_cast<int32_t>(r));
  }
  cuda::SampleCudaParams sp{logits,  rows,    vocab,
                            nullptr, nullptr, static_cast<int64_t>(sample_rows.size()),
                            nullptr, 0,       nullptr};
  sp.ids = static_cast<int32_t*>(im.Scratch(Impl::kSampleIds, rows * sizeof(int32_t), "Sample"));
  if (sp.ids == nullptr) return;
  if (!sample_rows.empty()) {
    // One staged block: the rows' parameters, then the sampled row indices.
    const size_t param_bytes = Align(static_cast<size_t>(rows) * sizeof(SamplingParams), 256);
    std::vector<char> staged(param_bytes + sample_rows.size() * sizeof(int32_t));
    std::memcpy(staged.data(), params, static_cast<size_t>(rows) * sizeof(SamplingParams));
    std::memcpy(staged.data() + param_bytes, sample_rows.data(),
                sample_rows.size() * sizeof(int32_t));
    if (!im.Check(im.stage.Fits(staged.size()), "Sample (too many rows to stage)")) return;
    const void* device = nullptr;
    cudaError_t e = cudaSuccess;
    im.stage.Put(staged.data(), staged.size(), im.stream, &device, &e);
    if (!im.Ok(e, "Sample staging")) return;
    sp.params = static_cast<const SamplingParams*>(device);
    sp.sample_rows =
        reinterpret_cast<const int32_t*>(static_cast<const char*>(device) + param_bytes);
    sp.workspace_bytes = cuda::SampleWorkspaceBytes(sp.n_sample, vocab);
    sp.workspace = im.Scratch(Impl::kSample, sp.workspace_bytes, "Sample");
    if (sp.workspace == nullptr) return;
  }
  if (!im.Check(cuda::CanImplement(sp), "Sample") ||
      !im.Ok(cuda::Launch(sp, im.stream), "Sample")) {
    return;
  }
  cudaError_t e = cudaSuccess;
  void* host = im.pinned.Get(rows * sizeof(int32_t), &e);
  if (!im.Ok(e, "Sample (pinned ids)") ||
      !im.Ok(
          cudaMemcpyAsync(host, sp.ids, rows * sizeof(int32_t), cudaMemcpyDeviceToHost, im.stream),
          "Sample (ids)") ||
      !im.Ok(cudaStreamSynchronize(im.stream), "Sample")) {
    return;
  }
  std::memcpy(ids, host, rows * sizeof(int32_t));
}

absl::StatusOr<double> CudaBackend::MeasureCopyBandwidth(size_t bytes, int iterations) {
  Impl& im = *impl_;
  im.Enter();
  RETURN_IF_ERROR(Synchronize());
  ASSIGN_OR_RETURN(Buffer a, Allocate(bytes));
  ASSIGN_OR_RETURN(Buffer b, Allocate(bytes));
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  float ms = 0.0f;
  bool ok = im.Ok(cudaMemsetAsync(a.get(), 1, bytes, im.stream), "memset") &&
            im.Ok(cudaEventCreate(&start), "cudaEventCreate") &&
            im.Ok(cudaEventCreate(&stop), "cudaEventCreate") &&
            im.Ok(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, im.stream),
                  "copy") &&
            im.Ok(cudaEventRecord(start, im.stream), "cudaEventRecord");
  for (int i = 0; ok && i < iterations; ++i) {
    ok = im.Ok(cudaMemcpyAsync(i % 2 == 0 ? a.get() : b.get(), i % 2 == 0 ? b.get() : a.get(),
                               bytes, cudaMemcpyDeviceToDevice, im.stream),
               "copy");
  }
  ok = ok && im.Ok(cudaEventRecord(stop, im.stream), "cudaEventRecord") &&
       im.Ok(cudaEventSynchronize(stop), "cudaEventSynchronize") &&
       im.Ok(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  RETURN_IF_ERROR(Synchronize());
  if (!ok || ms <= 0.0f) return absl::InternalError("copy bandwidth measurement failed");
  return 2.0 * static_cast<double>(bytes) * iterations / (ms * 1e-3);
}

absl::StatusOr<double> CudaBackend::MeasureBf16GemmFlops(int64_t m, int64_t n, int64_t k,
                                                         int iterations) {
  Impl& im = *impl_;
  im.Enter();
  RETURN_IF_ERROR(Synchronize());
  ASSIGN_OR_RETURN(Buffer a, Allocate(static_cast<size_t>(m * k) * 2));
  ASSIGN_OR_RETURN(Buffer b, Allocate(static_cast<size_t>(n * k) * 2));
  ASSIGN_OR_RETURN(Buffer c, Allocate(static_cast<size_t>(m * n) * 4));
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  float ms = 0.0f;
  // 0x3c3c: bf16 ~0.0115, so the inputs are not all zero.
  bool ok =
      im.Ok(cudaMemsetAsync(a.get(), 0x3c, static_cast<size_t>(m * k) * 2, im.stream), "memset") &&
      im.Ok(cudaMemsetAsync(b.get(), 0x3c, static_cast<size_t>(n * k) * 2, im.stream), "memset") &&
      im.Ok(cudaEventCreate(&start), "cudaEventCreate") &&
      im.Ok(cudaEventCreate(&stop), "cudaEventCreate");
  if (ok) {
    im.GemmBf16(b.get(), n, k, a.get(), m, static_cast<float*>(c.get()), n, 0.0f);
    ok = im.Ok(cudaEventRecord(start, im.stream), "cudaEventRecord");
  }
  for (int i = 0; ok && i < iterations; ++i) {
    im.GemmBf16(b.get(), n, k, a.get(), m, static_cast<float*>(c.get()), n, 0.0f);
  }
  ok = ok && im.Ok(cudaEventRecord(stop, im.stream), "cudaEventRecord") &&
       im.Ok(cudaEventSynchronize(stop), "cudaEventSynchronize") &&
       im.Ok(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  RETURN_IF_ERROR(Synchronize());
  if (!ok || ms <= 0.0f) return absl::InternalError("GEMM measurement failed");
  return 2.0 * static_cast<double>(m) * n * k * iterations / (ms * 1e-3);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int threads) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create({}));
  return std::unique_ptr<Backend>(std::move(backend));
}

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace ringserve::kernels
