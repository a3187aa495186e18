#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ringserve/v1/generation.pb.h"
#include "router/text_stream.h"

namespace ringserve::router {

// Limits the router enforces on the public API.
struct RouterLimits {
  uint32_t vocab_size = 0;
  uint32_t max_context = 0;     // prompt + generated tokens
  uint32_t max_new_tokens = 0;  // per request
  uint32_t max_stop_strings = 16;
  uint32_t max_stop_string_bytes = 256;
  uint32_t max_stop_token_ids = 64;
  uint32_t max_messages = 1024;
  uint32_t max_message_bytes = 1 << 20;
  uint32_t max_prompt_bytes = 8 << 20;
  uint32_t max_request_id_bytes = 128;
};

// Checks a request against the limits without tokenizing (token ids are checked here; text
// and chat are checked after tokenization). Errors name the field and the limit.
absl::Status ValidateRequest(const ringserve::v1::GenerateRequest& request,
                             const RouterLimits& limits);

// The prompt's token ids: token ids as given, text encoded, chat messages rendered with the
// chat template and encoded. Fails when the prompt plus stopping.max_tokens exceeds the
// context. `text` may be null (text and chat prompts then answer UNIMPLEMENTED).
absl::StatusOr<std::vector<uint32_t>> PromptTokens(const ringserve::v1::GenerateRequest& request,
                                                   const RouterLimits& limits,
                                                   const TextCodec* text);

}  // namespace ringserve::router
