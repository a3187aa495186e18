#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/text/jinja.h"
#include "common/text/untrusted_json.h"
#include "nlohmann/json.hpp"

namespace ringserve::text {

// A tool call made by the assistant.
struct ToolCall {
  std::string id;  // empty when the client gave none
  std::string name;
  std::string arguments_json;  // the arguments as the model wrote them (JSON text)
};

// One message of a conversation.
struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool"; the router validates roles
  std::optional<std::string> content;
  std::optional<std::string> reasoning_content;
  std::vector<ToolCall> tool_calls;
  std::string tool_call_id;  // tool results; empty when absent
  std::string name;          // empty when absent
};

// What a chat template renders.
struct ChatTemplateInputs {
  std::vector<ChatMessage> messages;
  nlohmann::ordered_json tools = nullptr;  // a list of tool definitions, or null for none
  bool add_generation_prompt = false;
  // More template variables, e.g. {"enable_thinking": true, "bos_token": "<|startoftext|>"}.
  nlohmann::ordered_json extra_vars = nlohmann::ordered_json::object();
  // Bounds for client input: tool-call arguments are parsed within `json_limits` (otherwise
  // passed as the string), and Render fails with ResourceExhausted once the output would pass
  // `max_output_bytes` (rendering stops there).
  JsonLimits json_limits;
  size_t max_output_bytes = SIZE_MAX;
};

// A checkpoint's chat template (Jinja, HuggingFace conventions: trim_blocks and lstrip_blocks).
// Immutable after Create; Render may be called from many threads at once.
class ChatTemplate {
 public:
  // Compiles `source`; syntax errors, unknown filters and tests fail here, naming the line.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(std::string_view source);

  // The variables the template sees: `messages` (each with role and, when present, content,
  // reasoning_content, tool_calls as [{id, type: "function", function: {name, arguments}}],
  // tool_call_id, name), `tools` (null when empty), `add_generation_prompt` and `extra_vars`.
  // Tool-call arguments that parse as a JSON object within inputs.json_limits are passed as that
  // object (as SGLang and vLLM do, so `arguments | tojson` prints canonical JSON), otherwise as
  // the original string.
  static nlohmann::ordered_json BuildContext(const ChatTemplateInputs& inputs);

  // Renders BuildContext(inputs). Template errors (including raise_exception) are
  // InvalidArgument; exceeding the engine's limits is ResourceExhausted.
  absl::StatusOr<std::string> Render(const ChatTemplateInputs& inputs) const;
  // Renders with `context` (a JSON object) as the variables, failing with ResourceExhausted once
  // the output would pass `max_output_bytes`.
  absl::StatusOr<std::string> RenderContext(const nlohmann::ordered_json& context,
                                            size_t max_output_bytes = SIZE_MAX) const;

 private:
  explicit ChatTemplate(std::unique_ptr<jinja::Template> compiled)
      : compiled_(std::move(compiled)) {}

  std::unique_ptr<jinja::Template> compiled_;
};

// Reads OpenAI-style messages: a JSON list of {role, content, reasoning_content, tool_calls,
// tool_call_id, name}. `content` may be a string, null, or a list of {type: "text", text}
// parts (joined); tool-call arguments may be a string or a JSON value.
absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromJson(
    const nlohmann::ordered_json& messages);

}  // namespace ringserve::text
