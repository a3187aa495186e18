// The CUDA side of the state transports on real GPUs: device-resident states (the CUDA
// backend's) over the gRPC stream (one device), and the NCCL transport end to end (two devices:
// LinkStateSender on device 0, LinkReceiver on device 1, the handshake and the manifests over a
// real gRPC server). Each test skips on fewer devices.
#include <grpcpp/grpcpp.h>

#include "common/base/clock.h"
#include "common/base/status_macros.h"
#include "common/state/device_memory.h"
#include "common/state/grpc_stream.h"
#include "common/state/link_transport.h"
#include "common/state/nccl_byte_link.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/nccl/nccl_link.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::state {
namespace {

TEST(DeviceStateTest, CudaBackendStatesRoundTripOverTheGrpcStream) {
  if (kernels::NcclLink::DeviceCount() < 1) GTEST_SKIP() << "needs a CUDA device";
  auto model = testing::LoadTinyModel();
  auto cuda = kernels::CreateBackend("cuda", 1);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  auto device = DeviceStateMemory::Create(0);
  ASSERT_TRUE(device.ok()) << device.status();
  const model::ModelConfig& config = model->config();
  // A host state of random bytes, and its copy in device memory.
  auto host = testing::RandomState(*model, 4096, 4096, 77);
  auto created = model::SequenceState::Create(config, cuda->get(), 4096);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE((*cuda)->Synchronize().ok());  // Create zeroes it on the backend's stream
  auto source = std::make_unique<worker::ModelState>(std::move(*created));
  std::vector<Span> from;
  testing::ForEachStateSpan(*host, 4096, [&](const Span& s) { from.push_back(s); });
  size_t i = 0;
  testing::ForEachStateSpan(*source, 4096, [&](const Span& s) {
    ASSERT_TRUE((*device)->CopyFromHost(s.data, from[i++].data, s.bytes).ok());
  });
  source->set_position(4096);

  base::FakeClock clock;
  ReservationTable::Options options;
  options.layout = model->layout;
  options.model_fingerprint = model->fingerprint;
  options.limits = {2, 1 << 16};
  options.factory = [&](int64_t capacity) -> absl::StatusOr<std::unique_ptr<StateBuffer>> {
    auto state = model::SequenceState::Create(config, cuda->get(), capacity);
    if (state.ok()) RETURN_IF_ERROR((*cuda)->Synchronize());
    return worker::ModelState::Wrap(std::move(state));
  };
  options.clock = &clock;
  options.memory = device->get();
  auto table = ReservationTable::Create(std::move(options));
  ASSERT_TRUE(table.ok());
  DecodeStateService service(table->get(), nullptr);
  testing::TestServer server = testing::StartServer(&service);
  ChannelCache channels(grpc::InsecureChannelCredentials());
  GrpcStateSender sender(model->layout, &channels);
  auto r = (*table)->Reserve("d", 4096, 8, absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  TransferJob job;
  job.request_id = "d";
  job.ticket = r->ticket;
  job.decode_address = server.address();
  job.model_fingerprint = model->fingerprint;
  job.state = source.get();
  job.tokens = 4096;
  job.memory = device->get();
  auto sent = sender.Send(job, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(sent.ok()) << sent.status();
  auto ready = (*table)->TakeReady("d", r->ticket);
  ASSERT_TRUE(ready.ok()) << ready.status();
  auto back = testing::NewState(*model, 4104);
  std::vector<Span> to;
  testing::ForEachStateSpan(*back, 4096, [&](const Span& s) { to.push_back(s); });
  i = 0;
  testing::ForEachStateSpan(*ready->state, 4096, [&](const Span& s) {
    ASSERT_TRUE((*device)->CopyToHost(to[i++].data, s.data, s.bytes).ok());
  });
  back->set_position(4096);
  EXPECT_EQ(testing::CompareStates(*host, *back, 4096), "");
  server.server->Shutdown();
}

TEST(NcclTransportTest, MovesA4KStateBitExact) {
  if (kernels::NcclLink::DeviceCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
  auto model = testing::LoadTinyModel();
  base::FakeClock clock;
  auto table = testing::MakeTable(*model, &clock);
  NcclByteLinkFactory receiver_devices(1);
  LinkReceiver links(&receiver_devices, table.get(), {table->epoch()});
  DecodeStateService service(table.get(), &links);
  testing::TestServer server = testing::StartServer(&service);

  ChannelCache channels(grpc::InsecureChannelCredentials());
  NcclByteLinkFactory sender_devices(0);
  LinkStateSender sender(model->layout, &sender_devices, &channels, {"prefill-0", 5, 1024});
  for (int i = 0; i < 2; ++i) {
    const std::string id = absl::StrCat("r", i);
    auto state = testing::RandomState(*model, 4096, 4096, 40 + i);
    auto r = table->Reserve(id, 4096, 8, absl::Seconds(60));
    ASSERT_TRUE(r.ok()) << r.status();
    TransferJob job;
    job.request_id = id;
    job.ticket = r->ticket;
    job.decode_address = server.address();
    job.sender_epoch = 5;
    job.model_fingerprint = model->fingerprint;
    job.state = state.get();
    job.tokens = 4096;
    auto sent = sender.Send(job, absl::Now() + absl::Seconds(120));
    ASSERT_TRUE(sent.ok()) << sent.status();
    auto ready = table->TakeReady(id, r->ticket);
    ASSERT_TRUE(ready.ok()) << ready.status();
    EXPECT_EQ(testing::CompareStates(*state, *ready->state, 4096), "");
    ASSERT_TRUE(table->Release(id, r->ticket).ok());
  }
  EXPECT_EQ(sender.links(), 1);
  EXPECT_EQ(links.links(), 1);
  server.server->Shutdown();
}

}  // namespace
}  // namespace ringserve::state
