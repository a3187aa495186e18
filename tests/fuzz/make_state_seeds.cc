// Writes the seed corpus of state_manifest_fuzz: the state of the fuzz model's 3 tokens as the
// gRPC-stream transport sends it (manifest, then pieces), with whole and chunked K/V and with
// checksums in the manifest and trailing. Usage: make_state_seeds DIR
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/model/sequence_state.h"
#include "common/state/format.h"
#include "common/state/wire.h"
#include "common/worker/model_state.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/fuzz/state_fuzz_model.h"

namespace ringserve::fuzz {
namespace {

constexpr int64_t kTokens = 3;

int Main(const std::string& dir) {
  auto config = model::ModelConfig::FromJson(std::string(kStateFuzzConfigJson));
  if (!config.ok()) return 1;
  kernels::CpuBackend backend(1);
  auto created = model::SequenceState::Create(*config, &backend, kStateFuzzCapacity);
  if (!created.ok()) return 1;
  worker::ModelState source(std::move(*created));
  const state::StateLayout layout = worker::LayoutOf(*config);
  uint8_t next = 1;
  auto fill = [&](void* data, size_t bytes) {
    auto* p = static_cast<uint8_t*>(data);
    for (size_t i = 0; i < bytes; ++i) p[i] = next = static_cast<uint8_t>(next * 37 + 11);
  };
  for (int64_t i = 0; i < source.num_linear(); ++i) {
    fill(source.LinearState(i).data, source.LinearState(i).bytes);
  }
  for (int64_t i = 0; i < source.num_softmax(); ++i) {
    for (bool value : {false, true}) {
      for (const state::Span& span : source.KvSpans(i, value, 0, kTokens)) {
        fill(span.data, span.bytes);
      }
    }
  }
  source.set_position(kTokens);
  state::ManifestHeader header;
  header.request_id = "r1";
  header.ticket = "t1";
  header.model_fingerprint = kStateFuzzFingerprint;
  header.first_token = 5;
  struct Variant {
    const char* name;
    int64_t chunk;
    bool trailing;
    size_t piece_bytes;
  };
  for (const Variant& v : {Variant{"whole", 0, false, 1 << 20}, Variant{"chunked", 2, false, 40},
                           Variant{"trailing", 0, true, 24}}) {
    auto manifest = state::BuildManifest(layout, source, kTokens, header, {v.chunk, v.trailing});
    if (!manifest.ok()) return 1;
    std::string input;
    internal::v1::StateMessage first;
    *first.mutable_manifest() = *manifest;
    AppendFrame(first.SerializeAsString(), 7, &input);
    state::PieceReader reader(layout, source, *manifest, v.piece_bytes);
    state::Piece piece;
    while (true) {
      auto more = reader.Next(&piece);
      if (!more.ok()) return 1;
      if (!*more) break;
      std::string bytes(state::EncodedPieceSize(piece), '\0');
      state::EncodePiece(piece, reinterpret_cast<uint8_t*>(bytes.data()));
      AppendFrame(bytes, static_cast<uint8_t>(piece.offset + 3), &input);
    }
    std::ofstream(dir + "/" + v.name, std::ios::binary) << input;
  }
  return 0;
}

}  // namespace
}  // namespace ringserve::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  return ringserve::fuzz::Main(argv[1]);
}
