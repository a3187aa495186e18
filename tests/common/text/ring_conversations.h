#pragma once

#include <string>
#include <vector>

#include "common/text/chat_template.h"
#include "nlohmann/json.hpp"

namespace ringserve::text::testing {

inline ChatMessage Msg(std::string role, std::string content) {
  ChatMessage message;
  message.role = std::move(role);
  message.content = std::move(content);
  return message;
}

inline ChatMessage Call(std::optional<std::string> content, std::vector<ToolCall> calls) {
  ChatMessage message;
  message.role = "assistant";
  message.content = std::move(content);
  message.tool_calls = std::move(calls);
  return message;
}

inline nlohmann::ordered_json WeatherTools() {
  return nlohmann::ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather",
      "description": "Weather for a city — «quoted» \"text\"\nsecond line",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                     "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "now", "parameters": {}}}])");
}

// Conversations covering every branch of the Ring chat template.
inline std::vector<ChatTemplateInputs> RingConversations() {
  std::vector<ChatTemplateInputs> cases;
  auto add = [&](std::vector<ChatMessage> messages, bool generation_prompt,
                 nlohmann::ordered_json tools = nullptr) {
    ChatTemplateInputs inputs;
    inputs.messages = std::move(messages);
    inputs.add_generation_prompt = generation_prompt;
    inputs.tools = std::move(tools);
    cases.push_back(std::move(inputs));
  };
  // 0: one user turn.
  add({Msg("user", "Hello!")}, true);
  // 1: system prompt and several turns.
  add({Msg("system", "You are terse."), Msg("user", "2+2?"), Msg("assistant", "4"),
       Msg("user", "And 3+3?")},
      true);
  // 2: reasoning_content after the last query is shown; before it, dropped.
  {
    ChatMessage early = Msg("assistant", "Paris.");
    early.reasoning_content = "The capital of France.";
    ChatMessage late = Msg("assistant", "\n\nBerlin.");
    late.reasoning_content = "\nGermany's capital.\n";
    add({Msg("user", "Capital of France?"), early, Msg("user", "Germany?"), late}, false);
  }
  // 3: <think> inside assistant content.
  add({Msg("user", "Q1"), Msg("assistant", "<think>\nold thoughts\n</think>\n\nA1"),
       Msg("user", "Q2"), Msg("assistant", "<think>\nnew thoughts\n</think>\n\nA2")},
      false);
  // 4: tools, tool calls (JSON arguments and free text), tool results, final answer.
  add({Msg("system", "Use tools."), Msg("user", "Weather in Berlin and the time?"),
       Call("Let me check.", {{"call_1", "get_weather", R"({"city":"Berlin","days":2})"},
                              {"call_2", "now", "not json"}}),
       Msg("tool", R"({"temp": 21})"), Msg("tool", "12:00"), Msg("assistant", "21°C at noon.")},
      true, WeatherTools());
  // 5: a tool call without content, then a single tool result.
  add({Msg("user", "Time?"), Call(std::nullopt, {{"", "now", "{}"}}), Msg("tool", "13:37")}, true,
      WeatherTools());
  // 6: a user turn that is a tool response does not count as the last query.
  {
    ChatMessage thought = Msg("assistant", "Calling.");
    thought.reasoning_content = "I need the tool.";
    ChatMessage done = Msg("assistant", "Done.");
    done.reasoning_content = "Got it.";
    add({Msg("user", "Go"), thought, Msg("user", "<tool_response>\nok\n</tool_response>"), done},
        false);
  }
  // 7: a system message later in the conversation; an unknown role is skipped by the template.
  add({Msg("user", "Hi"), Msg("system", "Be kind."), Msg("critic", "ignored"),
       Msg("assistant", "Hello")},
      true);
  // 8: Unicode, whitespace and markup in content.
  add({Msg("system", "  spaced  \n"), Msg("user", "中文 😀 e\u0301\n\n\tcode:\n  x = {\"a\": 1}")},
      true);
  // 9: empty conversation pieces.
  add({Msg("user", ""), Msg("assistant", "")}, false);
  return cases;
}

}  // namespace ringserve::text::testing
