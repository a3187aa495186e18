// Fuzzes the Jinja chat-template engine: compiling (text::jinja::Template::Create, as
// text::ChatTemplate::Create does, with HuggingFace's trim_blocks and lstrip_blocks) and
// rendering the context text::ChatTemplate::BuildContext makes. The input is the template
// source, optionally followed by a NUL byte and a JSON list of OpenAI-style messages (read by
// text::ChatMessagesFromJson); without one, a fixed conversation with a system prompt, tool
// calls, reasoning and a tool result is rendered. The render limits are lowered so that each
// input runs in milliseconds; errors must be statuses, never crashes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/text/chat_template.h"
#include "common/text/jinja.h"
#include "common/text/jinja_value.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ringserve::text::ChatMessage;
using ringserve::text::ChatTemplate;
using ringserve::text::ChatTemplateInputs;
using ringserve::text::ToolCall;

std::vector<ChatMessage> FixedConversation() {
  std::vector<ChatMessage> messages(5);
  messages[0].role = "system";
  messages[0].content = "You are a helpful assistant.";
  messages[1].role = "user";
  messages[1].content = "What is the weather in Paris? <role>";
  messages[2].role = "assistant";
  messages[2].reasoning_content = "I should call the tool.";
  messages[2].content = "";
  messages[2].tool_calls.push_back(
      ToolCall{"call_1", "get_weather", R"({"city": "Paris", "days": [1, 2]})"});
  messages[2].tool_calls.push_back(ToolCall{"", "broken", "not json"});
  messages[3].role = "tool";
  messages[3].tool_call_id = "call_1";
  messages[3].name = "get_weather";
  messages[3].content = R"({"temp": 21.5})";
  messages[4].role = "user";
  messages[4].content = "Thanks! 🙂";
  return messages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  ChatTemplateInputs inputs;
  inputs.messages = FixedConversation();
  if (nul != std::string_view::npos) {
    const nlohmann::ordered_json messages =
        nlohmann::ordered_json::parse(input.substr(nul + 1), nullptr, false);
    if (messages.is_discarded()) return 0;
    auto parsed = ringserve::text::ChatMessagesFromJson(messages);
    if (!parsed.ok()) return 0;
    inputs.messages = std::move(*parsed);
  }
  inputs.add_generation_prompt = size % 2 == 0;
  inputs.tools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  inputs.extra_vars = {{"bos_token", "<|startoftext|>"}, {"enable_thinking", size % 3 == 0}};

  ringserve::text::jinja::TemplateOptions options;
  options.max_output_bytes = 1 << 20;
  options.max_steps = 200'000;
  auto compiled = ringserve::text::jinja::Template::Create(source, options);
  if (!compiled.ok()) return 0;
  auto context = ringserve::text::jinja::Value::FromJson(ChatTemplate::BuildContext(inputs));
  FUZZ_CHECK(context.ok(), "the chat context does not convert to template values");
  auto rendered = (*compiled)->Render(context->AsDict());
  if (rendered.ok()) {
    FUZZ_CHECK(rendered->size() <= options.max_output_bytes, "output over the limit");
  }
  return 0;
}
