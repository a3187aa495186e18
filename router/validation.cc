#include "router/validation.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace ringserve::router {

using ringserve::v1::GenerateRequest;

namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<std::vector<uint32_t>> Encode(const GenerateRequest& request,
                                             const TextCodec* text) {
  switch (request.prompt_case()) {
    case GenerateRequest::kTokenIds:
      return std::vector<uint32_t>(request.token_ids().ids().begin(),
                                   request.token_ids().ids().end());
    case GenerateRequest::kText:
      if (text == nullptr) {
        return absl::UnimplementedError("text prompts need the model's tokenizer.json");
      }
      return text->Encode(request.text());
    case GenerateRequest::kMessages:
      if (text == nullptr) {
        return absl::UnimplementedError("chat prompts need the model's tokenizer files");
      }
      return text->EncodeChat(request.messages());
    default:
      return Invalid("prompt is empty");
  }
}

}  // namespace

absl::Status ValidateRequest(const GenerateRequest& r, const RouterLimits& limits) {
  if (r.request_id().size() > limits.max_request_id_bytes) {
    return Invalid(absl::StrCat("request_id of ", r.request_id().size(),
                                " bytes exceeds the limit ", limits.max_request_id_bytes));
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
      if (r.text().size() > limits.max_prompt_bytes) {
        return Invalid(absl::StrCat("prompt.text of ", r.text().size(), " bytes exceeds the limit ",
                                    limits.max_prompt_bytes));
      }
      break;
    case GenerateRequest::kMessages: {
      const auto& m = r.messages().messages();
      if (m.empty()) return Invalid("prompt.messages is empty");
      if (static_cast<uint32_t>(m.size()) > limits.max_messages) {
        return Invalid(absl::StrCat("prompt.messages holds ", m.size(), " messages; the limit is ",
                                    limits.max_messages));
      }
      for (int i = 0; i < m.size(); ++i) {
        const std::string& role = m[i].role();
        if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
          return Invalid(absl::StrCat("prompt.messages[", i, "].role '", role,
                                      "' is not one of system, user, assistant, tool"));
        }
        const size_t bytes = m[i].content().size() + m[i].reasoning_content().size();
        if (bytes > limits.max_message_bytes) {
          return Invalid(absl::StrCat("prompt.messages[", i, "] of ", bytes,
                                      " bytes exceeds the limit ", limits.max_message_bytes));
        }
      }
      break;
    }
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
  absl::StatusOr<std::vector<uint32_t>> prompt = Encode(request, text);
  if (!prompt.ok()) return prompt.status();
  if (prompt->empty()) return Invalid("prompt is empty");
  const uint64_t total = prompt->size() + request.stopping().max_tokens();
  if (total > limits.max_context) {
    return Invalid(absl::StrCat("prompt of ", prompt->size(), " tokens + stopping.max_tokens ",
                                request.stopping().max_tokens(), " exceeds the model's context of ",
                                limits.max_context, " tokens"));
  }
  return prompt;
}

}  // namespace ringserve::router
