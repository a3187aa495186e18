#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ringserve/v1/generation.pb.h"
#include "router/text_stream.h"

namespace ringserve::router {

// Limits the router enforces on the public API, the same for every entry point (the README's
// bad-input table lists them). Sizes are checked before any parsing or tokenizing; token
// counts while tokenizing, which stops at the limit.
struct RouterLimits {
  uint32_t vocab_size = 0;
  uint32_t max_context = 0;     // prompt + generated tokens
  uint32_t max_new_tokens = 0;  // per request
  uint32_t max_stop_strings = 16;
  uint32_t max_stop_string_bytes = 256;
  uint32_t max_stop_token_ids = 64;
  uint32_t max_request_id_bytes = 128;  // printable ASCII only
  // cache_salt; the prefill workers refuse longer salts with the same limit.
  uint32_t max_cache_salt_bytes = 1024;
  uint32_t max_messages = 1024;
  // One message: content, reasoning_content and its tool calls' names and arguments. Also the
  // limit of each tools_json entry.
  uint32_t max_message_bytes = 1 << 20;
  // A text prompt; all of a chat's messages and tools together; the rendered chat template.
  uint32_t max_prompt_bytes = 8 << 20;
  uint32_t max_tools = 128;            // tools_json entries
  uint32_t max_tool_calls = 128;       // tool calls of one message
  int max_json_depth = 64;             // nesting of each tools_json and arguments_json
  uint32_t max_json_values = 100'000;  // values of all of a request's JSON together
  // A whole request message, refused by gRPC before it is parsed: room for a prompt of
  // max_prompt_bytes (or 128K token ids) and the rest of the request.
  int max_request_bytes = 16 << 20;
};

// Checks a Generate request against the limits without tokenizing (token ids are checked here;
// the token count of text and chat prompts while tokenizing). Errors are INVALID_ARGUMENT naming
// the field and the limit.
absl::Status ValidateRequest(const ringserve::v1::GenerateRequest& request,
                             const RouterLimits& limits);

// The prompt's token ids: token ids as given, text encoded, chat messages rendered with the
// chat template and encoded. Call after ValidateRequest. Fails with INVALID_ARGUMENT when the
// prompt plus stopping.max_tokens exceeds the context (tokenizing stops there) or the rendered
// chat passes max_prompt_bytes (rendering stops there). `text` may be null (text and chat
// prompts then answer UNIMPLEMENTED).
absl::StatusOr<std::vector<uint32_t>> PromptTokens(const ringserve::v1::GenerateRequest& request,
                                                   const RouterLimits& limits,
                                                   const TextCodec* text);

// Tokenize's answer: validates `request` with the same limits as ValidateRequest (text bytes;
// messages, roles, bytes, tools and JSON), then encodes it, refusing more than max_context
// tokens (tokenizing stops there). Errors are INVALID_ARGUMENT naming the field and the limit;
// UNIMPLEMENTED when `text` is null.
absl::StatusOr<std::vector<uint32_t>> TokenizeTokens(const ringserve::v1::TokenizeRequest& request,
                                                     const RouterLimits& limits,
                                                     const TextCodec* text);

}  // namespace ringserve::router
