#include "router/validation.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/text/untrusted_json.h"

namespace ringserve::router {

using ringserve::v1::ChatMessages;
using ringserve::v1::GenerateRequest;
using ringserve::v1::TokenizeRequest;

namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status ValidateRequestId(const std::string& id, const RouterLimits& limits) {
  if (id.size() > limits.max_request_id_bytes) {
    return Invalid(absl::StrCat("request_id of ", id.size(), " bytes exceeds the limit ",
                                limits.max_request_id_bytes));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c > 0x7e) {
      return Invalid(absl::StrCat("request_id byte ", i, " is 0x", absl::Hex(c, absl::kZeroPad2),
                                  "; only printable ASCII (0x20 to 0x7e) is accepted"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateText(const std::string& field, const std::string& text,
                          const RouterLimits& limits) {
  if (text.size() > limits.max_prompt_bytes) {
    return Invalid(absl::StrCat(field, " of ", text.size(), " bytes exceeds the limit ",
                                limits.max_prompt_bytes));
  }
  return absl::OkStatus();
}

// Checks one JSON text of a request and takes its values from *values_left. Text that is not
// JSON is accepted unless `must_parse` (tool-call arguments are then passed as a string).
absl::Status CheckJson(const std::string& field, const std::string& json, bool must_parse,
                       const RouterLimits& limits, size_t* values_left) {
  const absl::StatusOr<size_t> values =
      text::CheckUntrustedJson(json, {limits.max_json_depth, *values_left});
  if (values.ok()) {
    *values_left -= *values;
    return absl::OkStatus();
  }
  if (values.status().code() == absl::StatusCode::kInvalidArgument) {
    return must_parse ? Invalid(absl::StrCat(field, " is ", values.status().message()))
                      : absl::OkStatus();
  }
  return Invalid(absl::StrCat(field, ": ", values.status().message(), " (the limits are ",
                              limits.max_json_depth, " levels and ", limits.max_json_values,
                              " values in all of a request's JSON)"));
}

// Sizes, counts and roles first, then the JSON within its depth and value limits.
absl::Status ValidateChat(const std::string& field, const ChatMessages& chat,
                          const RouterLimits& limits) {
  const auto& messages = chat.messages();
  if (messages.empty()) return Invalid(absl::StrCat(field, " is empty"));
  if (static_cast<uint32_t>(messages.size()) > limits.max_messages) {
    return Invalid(absl::StrCat(field, " holds ", messages.size(), " messages; the limit is ",
                                limits.max_messages));
  }
  if (static_cast<uint32_t>(chat.tools_json_size()) > limits.max_tools) {
    return Invalid(absl::StrCat(field, ".tools_json holds ", chat.tools_json_size(),
                                " tools; the limit is ", limits.max_tools));
  }
  uint64_t total = 0;
  for (int i = 0; i < messages.size(); ++i) {
    const ringserve::v1::ChatMessage& m = messages[i];
    const std::string& role = m.role();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(absl::StrCat(field, "[", i, "].role '", role.substr(0, 32),
                                  "' is not one of system, user, assistant, tool"));
    }
    if (static_cast<uint32_t>(m.tool_calls_size()) > limits.max_tool_calls) {
      return Invalid(absl::StrCat(field, "[", i, "].tool_calls holds ", m.tool_calls_size(),
                                  " calls; the limit is ", limits.max_tool_calls));
    }
    uint64_t bytes = m.content().size() + m.reasoning_content().size();
    for (const auto& call : m.tool_calls())
      bytes += call.name().size() + call.arguments_json().size();
    if (bytes > limits.max_message_bytes) {
      return Invalid(absl::StrCat(field, "[", i, "] of ", bytes, " bytes exceeds the limit ",
                                  limits.max_message_bytes));
    }
    total += bytes;
  }
  for (int i = 0; i < chat.tools_json_size(); ++i) {
    const size_t bytes = chat.tools_json(i).size();
    if (bytes > limits.max_message_bytes) {
      return Invalid(absl::StrCat(field, ".tools_json[", i, "] of ", bytes,
                                  " bytes exceeds the limit ", limits.max_message_bytes));
    }
    total += bytes;
  }
  if (total > limits.max_prompt_bytes) {
    return Invalid(absl::StrCat(field, " hold ", total, " bytes in all; the limit is ",
                                limits.max_prompt_bytes));
  }
  size_t values_left = limits.max_json_values;
  for (int i = 0; i < chat.tools_json_size(); ++i) {
    RETURN_IF_ERROR(CheckJson(absl::StrCat(field, ".tools_json[", i, "]"), chat.tools_json(i),
                              /*must_parse=*/true, limits, &values_left));
  }
  for (int i = 0; i < messages.size(); ++i) {
    for (int j = 0; j < messages[i].tool_calls_size(); ++j) {
      RETURN_IF_ERROR(CheckJson(absl::StrCat(field, "[", i, "].tool_calls[", j, "].arguments_json"),
                                messages[i].tool_calls(j).arguments_json(), /*must_parse=*/false,
                                limits, &values_left));
    }
  }
  return absl::OkStatus();
}

// The budget of one encode: at most `max_tokens` ids, the rendered chat within max_prompt_bytes.
TextCodec::Budget BudgetOf(const RouterLimits& limits, size_t max_tokens) {
  TextCodec::Budget budget;
  budget.max_tokens = max_tokens;
  budget.max_prompt_bytes = limits.max_prompt_bytes;
  budget.json = {limits.max_json_depth, limits.max_json_values};
  return budget;
}

// A budget the tokenizer or the chat template ran out of, as the client's error.
absl::Status ClientError(const absl::Status& status, const std::string& limit) {
  if (status.code() != absl::StatusCode::kResourceExhausted) return status;
  return Invalid(absl::StrCat("prompt: ", status.message(), " (", limit, ")"));
}

absl::StatusOr<std::vector<uint32_t>> Encode(const GenerateRequest& request,
                                             const TextCodec::Budget& budget,
                                             const TextCodec* text) {
  switch (request.prompt_case()) {
    case GenerateRequest::kTokenIds:
      return std::vector<uint32_t>(request.token_ids().ids().begin(),
                                   request.token_ids().ids().end());
    case GenerateRequest::kText:
      if (text == nullptr) {
        return absl::UnimplementedError("text prompts need the model's tokenizer.json");
      }
      return text->Encode(request.text(), budget);
    case GenerateRequest::kMessages:
      if (text == nullptr) {
        return absl::UnimplementedError("chat prompts need the model's tokenizer files");
      }
      return text->EncodeChat(request.messages(), budget);
    default:
      return Invalid("prompt is empty");
  }
}

}  // namespace

absl::Status ValidateRequest(const GenerateRequest& r, const RouterLimits& limits) {
  RETURN_IF_ERROR(ValidateRequestId(r.request_id(), limits));
  if (r.cache_salt().size() > limits.max_cache_salt_bytes) {
    return Invalid(absl::StrCat("cache_salt of ", r.cache_salt().size(),
                                " bytes exceeds the limit ", limits.max_cache_salt_bytes));
  }
  switch (r.prompt_case()) {
    case GenerateRequest::PROMPT_NOT_SET:
      return Invalid("prompt is empty: set text, token_ids or messages");
    case GenerateRequest::kTokenIds: {
      const auto& ids = r.token_ids().ids();
      if (ids.empty()) return Invalid("prompt.token_ids is empty");
      if (static_cast<uint32_t>(ids.size()) >= limits.max_context) {
        return Invalid(absl::StrCat("prompt of ", ids.size(),
                                    " tokens exceeds the model's context of ", limits.max_context,
                                    " tokens (prompt + at least one generated token)"));
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] >= limits.vocab_size) {
          return Invalid(absl::StrCat("prompt.token_ids[", i, "] = ", ids[i],
                                      " is not below the vocabulary size ", limits.vocab_size));
        }
      }
      break;
    }
    case GenerateRequest::kText:
      if (r.text().empty()) return Invalid("prompt.text is empty");
      RETURN_IF_ERROR(ValidateText("prompt.text", r.text(), limits));
      break;
    case GenerateRequest::kMessages:
      RETURN_IF_ERROR(ValidateChat("prompt.messages", r.messages(), limits));
      break;
  }
  const auto& s = r.sampling();
  if (s.has_temperature() && !(s.temperature() >= 0.0f && s.temperature() <= 100.0f)) {
    return Invalid(absl::StrCat("sampling.temperature ", s.temperature(), " is outside [0, 100]"));
  }
  if (s.has_top_k() && s.top_k() < 0) {
    return Invalid(absl::StrCat("sampling.top_k ", s.top_k(), " is negative; use 0 for off"));
  }
  if (s.has_top_p() && !(s.top_p() > 0.0f && s.top_p() <= 1.0f)) {
    return Invalid(absl::StrCat("sampling.top_p ", s.top_p(), " is outside (0, 1]"));
  }
  if (s.has_min_p() && !(s.min_p() >= 0.0f && s.min_p() <= 1.0f)) {
    return Invalid(absl::StrCat("sampling.min_p ", s.min_p(), " is outside [0, 1]"));
  }
  const auto& st = r.stopping();
  if (st.max_tokens() == 0) return Invalid("stopping.max_tokens must be at least 1");
  if (st.max_tokens() > limits.max_new_tokens) {
    return Invalid(absl::StrCat("stopping.max_tokens ", st.max_tokens(), " exceeds the limit ",
                                limits.max_new_tokens));
  }
  if (static_cast<uint32_t>(st.stop_size()) > limits.max_stop_strings) {
    return Invalid(absl::StrCat("stopping.stop holds ", st.stop_size(), " strings; the limit is ",
                                limits.max_stop_strings));
  }
  for (int i = 0; i < st.stop_size(); ++i) {
    if (st.stop(i).empty() || st.stop(i).size() > limits.max_stop_string_bytes) {
      return Invalid(absl::StrCat("stopping.stop[", i, "] has ", st.stop(i).size(),
                                  " bytes; it must have 1 to ", limits.max_stop_string_bytes));
    }
  }
  if (static_cast<uint32_t>(st.stop_token_ids_size()) > limits.max_stop_token_ids) {
    return Invalid(absl::StrCat("stopping.stop_token_ids holds ", st.stop_token_ids_size(),
                                " ids; the limit is ", limits.max_stop_token_ids));
  }
  for (int i = 0; i < st.stop_token_ids_size(); ++i) {
    if (st.stop_token_ids(i) >= limits.vocab_size) {
      return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "] = ", st.stop_token_ids(i),
                                  " is not below the vocabulary size ", limits.vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> PromptTokens(const GenerateRequest& request,
                                                   const RouterLimits& limits,
                                                   const TextCodec* text) {
  const uint32_t max_tokens = request.stopping().max_tokens();
  const uint32_t room = limits.max_context > max_tokens ? limits.max_context - max_tokens : 0;
  absl::StatusOr<std::vector<uint32_t>> prompt = Encode(request, BudgetOf(limits, room), text);
  if (!prompt.ok()) {
    return ClientError(
        prompt.status(),
        absl::StrCat("the model's context of ", limits.max_context,
                     " tokens less stopping.max_tokens ", max_tokens, " leaves ", room,
                     "; a rendered prompt may have ", limits.max_prompt_bytes, " bytes"));
  }
  if (prompt->empty()) return Invalid("prompt is empty");
  const uint64_t total = prompt->size() + max_tokens;
  if (total > limits.max_context) {
    return Invalid(absl::StrCat("prompt of ", prompt->size(), " tokens + stopping.max_tokens ",
                                max_tokens, " exceeds the model's context of ", limits.max_context,
                                " tokens"));
  }
  return prompt;
}

absl::StatusOr<std::vector<uint32_t>> TokenizeTokens(const TokenizeRequest& request,
                                                     const RouterLimits& limits,
                                                     const TextCodec* text) {
  if (text == nullptr) {
    return absl::UnimplementedError("the model directory has no tokenizer files");
  }
  const TextCodec::Budget budget = BudgetOf(limits, limits.max_context);
  absl::StatusOr<std::vector<uint32_t>> ids;
  if (request.has_messages()) {
    RETURN_IF_ERROR(ValidateChat("messages", request.messages(), limits));
    ids = text->EncodeChat(request.messages(), budget);
  } else {
    RETURN_IF_ERROR(ValidateText("text", request.text(), limits));
    ids = text->Encode(request.text(), budget);
  }
  if (!ids.ok()) {
    return ClientError(ids.status(), absl::StrCat("the model's context is ", limits.max_context,
                                                  " tokens; a rendered prompt may have ",
                                                  limits.max_prompt_bytes, " bytes"));
  }
  return ids;
}

}  // namespace ringserve::router
