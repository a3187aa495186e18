// Fuzzes the receiving side of the prefill-to-decode state stream: state::DecodeStateMessage on
// messages cut into two gRPC slices, the manifest checks of state::StateAssembler::Create
// against a small model, and the assembler's piece checks (order, bounds, checksums) as the
// gRPC-stream transport feeds it. The input is a list of framed messages (state_fuzz_model.h);
// a manifest starts a new assembler, segment data feeds the current one. ASan checks that no
// piece writes outside the state.
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/model/config.h"
#include "common/model/sequence_state.h"
#include "common/state/format.h"
#include "common/state/wire.h"
#include "common/worker/model_state.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/state_fuzz_model.h"

namespace {

using ringserve::model::ModelConfig;
using ringserve::model::SequenceState;
using ringserve::state::DecodedMessage;
using ringserve::state::StateAssembler;

struct Receiver {
  ringserve::state::StateLayout layout;
  std::unique_ptr<ringserve::kernels::CpuBackend> backend;
  std::unique_ptr<ringserve::worker::ModelState> state;
};

Receiver* MakeReceiver() {
  // Protobuf logs every string field that is not UTF-8; the fuzzer makes many.
  google::protobuf::SetLogHandler(nullptr);
  auto* r = new Receiver;
  auto config = ModelConfig::FromJson(std::string(ringserve::fuzz::kStateFuzzConfigJson));
  FUZZ_CHECK(config.ok(), "the fuzz model's config does not parse");
  r->layout = ringserve::worker::LayoutOf(*config);
  r->backend = std::make_unique<ringserve::kernels::CpuBackend>(1);
  auto state =
      SequenceState::Create(*config, r->backend.get(), ringserve::fuzz::kStateFuzzCapacity);
  FUZZ_CHECK(state.ok(), "the fuzz model's state cannot be made");
  r->state = std::make_unique<ringserve::worker::ModelState>(std::move(*state));
  return r;
}

// Feeds one piece as the gRPC-stream transport does: each slice's bytes in turn, the checksum
// with the last.
absl::Status Feed(StateAssembler* assembler, const DecodedMessage& piece) {
  if (piece.bytes.empty()) {
    return assembler->Consume(piece.segment, piece.offset, {}, piece.checksum);
  }
  uint64_t offset = piece.offset;
  for (size_t i = 0; i < piece.bytes.size(); ++i) {
    const bool last = i + 1 == piece.bytes.size();
    absl::Status status = assembler->Consume(piece.segment, offset, piece.bytes[i],
                                             last ? piece.checksum : std::nullopt);
    if (!status.ok()) return status;
    offset += piece.bytes[i].size();
  }
  return absl::OkStatus();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Receiver* const receiver = MakeReceiver();
  std::unique_ptr<StateAssembler> assembler;
  size_t pos = 0;
  std::string_view message;
  size_t cut = 0;
  while (ringserve::fuzz::NextFrame(data, size, &pos, &message, &cut)) {
    std::vector<grpc::Slice> slices;
    if (cut > 0) slices.emplace_back(message.data(), cut);
    if (cut < message.size()) slices.emplace_back(message.data() + cut, message.size() - cut);
    absl::StatusOr<DecodedMessage> decoded = ringserve::state::DecodeStateMessage(slices);
    if (!decoded.ok()) continue;
    if (decoded->manifest.has_value()) {
      receiver->state->set_position(0);
      auto created =
          StateAssembler::Create(receiver->layout, ringserve::fuzz::kStateFuzzFingerprint,
                                 *decoded->manifest, receiver->state.get());
      assembler = created.ok() ? std::move(*created) : nullptr;
      continue;
    }
    if (assembler == nullptr) continue;
    const uint64_t before = assembler->bytes_received();
    if (Feed(assembler.get(), *decoded).ok()) {
      FUZZ_CHECK(assembler->bytes_received() >= before, "bytes received went backwards");
    }
    FUZZ_CHECK(assembler->bytes_received() <= assembler->bytes_total(),
               "more bytes received than the manifest holds");
  }
  if (assembler != nullptr && assembler->Finish().ok()) {
    FUZZ_CHECK(assembler->bytes_received() == assembler->bytes_total(), "finished early");
    FUZZ_CHECK(receiver->state->position() == assembler->manifest().token_count(),
               "the state's position is not the manifest's token count");
  }
  return 0;
}
