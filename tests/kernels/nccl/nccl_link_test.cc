// NcclLink and DeviceCopier on real GPUs: the pair tests need two devices, the others one; all
// skip without.
#include "kernels/nccl/nccl_link.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/nccl/device_copy.h"

namespace ringserve::kernels {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

// Ranks 0 (device 0) and 1 (device 1) of one fresh link.
struct Pair {
  std::unique_ptr<NcclLink> rank0;
  std::unique_ptr<NcclLink> rank1;
};

Pair Connect() {
  auto id = NcclLink::GenerateUniqueId();
  EXPECT_TRUE(id.ok()) << id.status();
  absl::StatusOr<std::unique_ptr<NcclLink>> one;
  std::thread join([&] { one = NcclLink::Create(*id, 1, 1, Deadline()); });
  auto zero = NcclLink::Create(*id, 0, 0, Deadline());
  join.join();
  EXPECT_TRUE(zero.ok()) << zero.status();
  EXPECT_TRUE(one.ok()) << one.status();
  return {std::move(*zero), std::move(*one)};
}

class NcclLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (NcclLink::DeviceCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
  }
};

TEST(NcclLinkSingleDeviceTest, JoinTimesOutWithoutAPeer) {
  if (NcclLink::DeviceCount() < 1) GTEST_SKIP() << "needs a CUDA device";
  auto id = NcclLink::GenerateUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto link = NcclLink::Create(*id, 0, 0, absl::Now() + absl::Milliseconds(500));
  EXPECT_EQ(link.status().code(), absl::StatusCode::kDeadlineExceeded) << link.status();
  EXPECT_EQ(NcclLink::Create("short", 0, 0, Deadline()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeviceCopierTest, CopiesBothWays) {
  if (NcclLink::DeviceCount() < 1) GTEST_SKIP() << "needs a CUDA device";
  auto copier = DeviceCopier::Create(0);
  ASSERT_TRUE(copier.ok()) << copier.status();
  const std::string sent = RandomBytes(5 << 20, 9);
  std::string back(sent.size(), '\0');
  void* device = nullptr;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device, sent.size()), cudaSuccess);
  ASSERT_TRUE((*copier)->FromHost(device, sent.data(), sent.size()).ok());
  ASSERT_TRUE((*copier)->ToHost(back.data(), device, back.size()).ok());
  EXPECT_EQ(back, sent);
  cudaFree(device);
}

TEST_F(NcclLinkTest, MovesHostAndDeviceBuffersAcrossChunks) {
  Pair pair = Connect();
  ASSERT_NE(pair.rank0, nullptr);
  // Host pieces of odd sizes around a device buffer, more than one chunk in all.
  const std::vector<size_t> sizes = {17, NcclLink::kChunkBytes + 5, 4096, 3 << 20};
  std::vector<std::string> sent, received;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sent.push_back(RandomBytes(sizes[i], i + 1));
    received.emplace_back(sizes[i], '\0');
  }
  void* device_src = nullptr;
  void* device_dst = nullptr;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device_src, sizes[2]), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device_src, sent[2].data(), sizes[2], cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device_dst, sizes[2]), cudaSuccess);
  std::vector<LinkBuffer> out = {{sent[0].data(), sizes[0]},
                                 {sent[1].data(), sizes[1]},
                                 {device_src, sizes[2]},
                                 {sent[3].data(), sizes[3]}};
  std::vector<LinkBuffer> in = {{received[0].data(), sizes[0]},
                                {received[1].data(), sizes[1]},
                                {device_dst, sizes[2]},
                                {received[3].data(), sizes[3]}};
  absl::Status recv;
  std::thread receiver([&] { recv = pair.rank1->Recv(in, Deadline()); });
  const absl::Status send = pair.rank0->Send(out, Deadline());
  receiver.join();
  ASSERT_TRUE(send.ok()) << send;
  ASSERT_TRUE(recv.ok()) << recv;
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(received[2].data(), device_dst, sizes[2], cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(received[i], sent[i]) << "buffer " << i;
  cudaFree(device_dst);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  cudaFree(device_src);
}

TEST_F(NcclLinkTest, ReceiveTimesOutAndAborts) {
  Pair pair = Connect();
  ASSERT_NE(pair.rank1, nullptr);
  std::string buffer(1024, '\0');
  const absl::Status late =
      pair.rank1->Recv({{buffer.data(), buffer.size()}}, absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_EQ(pair.rank1->Recv({{buffer.data(), buffer.size()}}, Deadline()).code(),
            absl::StatusCode::kDeadlineExceeded);  // the first error sticks
  pair.rank0->Abort();
  EXPECT_EQ(pair.rank0->Send({{buffer.data(), buffer.size()}}, Deadline()).code(),
            absl::StatusCode::kAborted);
}

TEST_F(NcclLinkTest, AbortEndsAPendingReceive) {
  Pair pair = Connect();
  ASSERT_NE(pair.rank1, nullptr);
  std::string buffer(1024, '\0');
  absl::Status recv;
  std::thread receiver([&] {
    recv = pair.rank1->Recv({{buffer.data(), buffer.size()}}, Deadline());
  });
  pair.rank1->Abort();
  receiver.join();
  EXPECT_EQ(recv.code(), absl::StatusCode::kAborted) << recv;
}

}  // namespace
}  // namespace ringserve::kernels
