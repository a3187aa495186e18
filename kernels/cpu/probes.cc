#include "kernels/cpu/probes.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "common/base/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

namespace ringserve::kernels {
namespace {

template <typename F>
double BestSeconds(int reps, F f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

MachineLimits ProbeMachine(int threads) {
  MachineLimits out;
  base::ThreadPool pool(threads);
  const size_t n = size_t{256} << 20 >> 2;  // 256 MiB of floats
  std::vector<float> buf(n, 1.0f);
  std::vector<double> partial(pool.num_threads());
  const double read_s = BestSeconds(5, [&] {
    pool.ParallelFor(pool.num_threads(), 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const size_t lo = n * t / pool.num_threads(), hi = n * (t + 1) / pool.num_threads();
        float lanes[16] = {0};
        for (size_t i = lo; i + 16 <= hi; i += 16) {
          for (int l = 0; l < 16; ++l) lanes[l] += buf[i + l];
        }
        double s = 0;
        for (float v : lanes) s += v;
        partial[t] = s;
      }
    });
  });
  out.read_bandwidth_gbs = n * sizeof(float) / read_s / 1e9;

  std::vector<float> dst(n / 4);
  const double copy_s =
      BestSeconds(5, [&] { std::memcpy(dst.data(), buf.data(), dst.size() * 4); });
  out.memcpy_gbs = dst.size() * 4.0 / copy_s / 1e9;

  const int64_t dim = 1536;
  std::vector<float> a(dim * dim, 0.5f), w(dim * dim, 0.25f), c(dim * dim);
  CpuBackend backend(threads);
  const Weight weight{w.data(), dim, dim, base::DType::kF32};
  const double gemm_s = BestSeconds(4, [&] {
    backend.Gemm({a.data(), dim, dim, &weight, c.data(), dim, false});
  });
  out.sgemm_gflops = 2.0 * dim * dim * dim / gemm_s / 1e9;
  return out;
}

}  // namespace ringserve::kernels
