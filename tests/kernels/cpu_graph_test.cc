// CpuBackend graphs: capture records instead of running, Replay reads the data behind the
// recorded pointers when it runs, and calls that cannot be recorded fail the capture.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace ringserve::kernels {
namespace {

TEST(CpuGraphTest, ReplayRunsTheRecordedCallsOnTheCurrentData) {
  CpuBackend backend(2);
  std::vector<float> x = {1, 2, 3}, y = {0, 0, 0}, z(3);
  ASSERT_TRUE(backend.BeginCapture().ok());
  backend.Fill(y.data(), 10.0f, 3);
  backend.Add(y.data(), x.data(), 3);
  backend.CopyDeviceToDevice(z.data(), y.data(), 3 * sizeof(float));
  auto graph = backend.EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_EQ(y, (std::vector<float>{0, 0, 0}));  // recorded, not run
  EXPECT_EQ(z, (std::vector<float>{0, 0, 0}));

  ASSERT_TRUE((*graph)->Replay().ok());
  EXPECT_EQ(z, (std::vector<float>{11, 12, 13}));
  x = {5, 6, 7};
  ASSERT_TRUE((*graph)->Replay().ok());
  EXPECT_EQ(z, (std::vector<float>{15, 16, 17}));
}

TEST(CpuGraphTest, CallsThatCannotBeRecordedFailTheCapture) {
  CpuBackend backend(2);
  std::vector<float> a(4, 1.0f), b(4);
  std::vector<int32_t> ids(1);
  const SamplingParams greedy{.temperature = 0.0f};
  const std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"CopyToDevice", [&] { backend.CopyToDevice(b.data(), a.data(), 16); }},
      {"CopyToHost", [&] { backend.CopyToHost(b.data(), a.data(), 16); }},
      {"Sample", [&] { backend.Sample(a.data(), 1, 4, &greedy, ids.data()); }},
      {"Synchronize", [&] { EXPECT_FALSE(backend.Synchronize().ok()); }},
      {"Allocate", [&] { EXPECT_FALSE(backend.Allocate(64).ok()); }},
  };
  for (const auto& [name, call] : calls) {
    ASSERT_TRUE(backend.BeginCapture().ok());
    b.assign(4, 0.0f);
    call();
    EXPECT_EQ(b, std::vector<float>(4, 0.0f)) << name << " ran during the capture";
    auto graph = backend.EndCapture();
    ASSERT_FALSE(graph.ok()) << name;
    EXPECT_EQ(graph.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(graph.status().message().find(name), std::string::npos) << graph.status();
  }
  // The backend is usable again afterwards.
  EXPECT_TRUE(backend.Synchronize().ok());
  EXPECT_TRUE(backend.Allocate(64).ok());
}

TEST(CpuGraphTest, CaptureCallsMustPair) {
  CpuBackend backend(1);
  EXPECT_EQ(backend.EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend.BeginCapture().ok());
  EXPECT_EQ(backend.BeginCapture().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(backend.EndCapture().ok());
}

}  // namespace
}  // namespace ringserve::kernels
