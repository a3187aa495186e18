// Fuzzes the router's request path without the network, as its handlers run it: the bytes a
// client sends parsed as a GenerateRequest or a TokenizeRequest (the first input byte picks
// which), then ValidateRequest and PromptTokens, or TokenizeTokens: validation, chat template
// rendering (the Ring 2.0 template, byte for byte) and tokenizing with a tokenizer trained at
// start-up. Properties: nothing crashes; every error is INVALID_ARGUMENT; an accepted prompt
// fits the context with its max_tokens and holds only ids of the vocabulary. Seeds: real
// requests (corpus/router_request_fuzz/, written by make_router_request_seeds.py), among them
// tools and tool-call arguments nesting 100,000 deep.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/text/bpe_trainer.h"
#include "google/protobuf/stubs/logging.h"
#include "router/text_stream.h"
#include "router/validation.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ringserve::router::RouterLimits;
using ringserve::router::TextCodec;

constexpr int kVocabSize = 1024;

const TextCodec* MakeCodec() {
  const std::string dir =
      (std::filesystem::temp_directory_path() / "router_request_fuzz_tokenizer").string();
  std::filesystem::create_directories(dir);
  FUZZ_CHECK(ringserve::text::WriteTokenizerFiles(dir, kVocabSize).ok(),
             "writing the tokenizer files failed");
  auto codec = TextCodec::Load(dir);
  FUZZ_CHECK(codec.ok(), std::string(codec.status().message()).c_str());
  return codec->release();
}

RouterLimits Limits() {
  RouterLimits limits;
  limits.vocab_size = kVocabSize;
  limits.max_context = 4096;
  limits.max_new_tokens = 512;
  return limits;
}

void CheckError(const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString().c_str());
}

void CheckIds(const std::vector<uint32_t>& ids, size_t max_tokens) {
  FUZZ_CHECK(ids.size() <= max_tokens, "more ids than the limit");
  for (uint32_t id : ids) FUZZ_CHECK(id < kVocabSize, "id outside the vocabulary");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // mutated inputs often hold invalid UTF-8
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const TextCodec* const codec = MakeCodec();
  static const RouterLimits limits = Limits();
  if (size == 0) return 0;
  const uint8_t* body = data + 1;
  const int body_size = static_cast<int>(size - 1);
  if ((data[0] & 1) == 0) {
    ringserve::v1::GenerateRequest request;
    if (!request.ParseFromArray(body, body_size)) return 0;
    if (absl::Status s = ringserve::router::ValidateRequest(request, limits); !s.ok()) {
      CheckError(s);
      return 0;
    }
    auto ids = ringserve::router::PromptTokens(request, limits, codec);
    if (!ids.ok()) {
      CheckError(ids.status());
      return 0;
    }
    CheckIds(*ids, limits.max_context - request.stopping().max_tokens());
    return 0;
  }
  ringserve::v1::TokenizeRequest request;
  if (!request.ParseFromArray(body, body_size)) return 0;
  auto ids = ringserve::router::TokenizeTokens(request, limits, codec);
  if (!ids.ok()) {
    CheckError(ids.status());
    return 0;
  }
  CheckIds(*ids, limits.max_context);
  return 0;
}
