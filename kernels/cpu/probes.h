#pragma once

namespace ringserve::kernels {

// Limits of this machine measured in the same run as a benchmark, with `threads` threads.
struct MachineLimits {
  double read_bandwidth_gbs = 0;  // streaming read of a buffer far larger than the caches
  double sgemm_gflops = 0;        // fp32 GEMM, the backend's split over threads
  double memcpy_gbs = 0;          // single-thread memcpy of a large buffer
};

// Takes a few hundred milliseconds; best of several repetitions.
MachineLimits ProbeMachine(int threads);

}  // namespace ringserve::kernels
