#include "common/text/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::text {

using OrderedJson = nlohmann::ordered_json;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(std::string_view source) {
  ASSIGN_OR_RETURN(std::unique_ptr<jinja::Template> compiled, jinja::Template::Create(source));
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(compiled)));
}

OrderedJson ChatTemplate::BuildContext(const ChatTemplateInputs& inputs) {
  OrderedJson messages = OrderedJson::array();
  for (const ChatMessage& message : inputs.messages) {
    OrderedJson m = OrderedJson::object();
    m["role"] = message.role;
    if (message.content.has_value()) m["content"] = *message.content;
    if (message.reasoning_content.has_value()) m["reasoning_content"] = *message.reasoning_content;
    if (!message.tool_calls.empty()) {
      OrderedJson calls = OrderedJson::array();
      for (const ToolCall& call : message.tool_calls) {
        absl::StatusOr<OrderedJson> parsed =
            ParseUntrustedJson(call.arguments_json, inputs.json_limits);
        OrderedJson arguments = parsed.ok() && parsed->is_object()
                                    ? *std::move(parsed)
                                    : OrderedJson(call.arguments_json);
        OrderedJson function = OrderedJson::object();
        function["name"] = call.name;
        function["arguments"] = std::move(arguments);
        OrderedJson c = OrderedJson::object();
        if (!call.id.empty()) c["id"] = call.id;
        c["type"] = "function";
        c["function"] = std::move(function);
        calls.push_back(std::move(c));
      }
      m["tool_calls"] = std::move(calls);
    }
    if (!message.tool_call_id.empty()) m["tool_call_id"] = message.tool_call_id;
    if (!message.name.empty()) m["name"] = message.name;
    messages.push_back(std::move(m));
  }
  OrderedJson context = OrderedJson::object();
  context["messages"] = std::move(messages);
  context["tools"] =
      inputs.tools.is_array() && !inputs.tools.empty() ? inputs.tools : OrderedJson(nullptr);
  context["add_generation_prompt"] = inputs.add_generation_prompt;
  if (inputs.extra_vars.is_object()) {
    for (auto it = inputs.extra_vars.begin(); it != inputs.extra_vars.end(); ++it) {
      context[it.key()] = it.value();
    }
  }
  return context;
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInputs& inputs) const {
  return RenderContext(BuildContext(inputs), inputs.max_output_bytes);
}

absl::StatusOr<std::string> ChatTemplate::RenderContext(const OrderedJson& context,
                                                        size_t max_output_bytes) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("chat template context is not a JSON object");
  }
  ASSIGN_OR_RETURN(const jinja::Value variables, jinja::Value::FromJson(context));
  return compiled_->Render(variables.AsDict(), max_output_bytes);
}

absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromJson(const OrderedJson& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages is not a JSON list");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const OrderedJson& m = messages[i];
    auto error = [i](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, ": ", std::string(what)));
    };
    if (!m.is_object()) return error("not a JSON object");
    ChatMessage message;
    if (!m.contains("role") || !m["role"].is_string()) return error("role is not a string");
    message.role = m["role"].get<std::string>();
    if (m.contains("content")) {
      const OrderedJson& content = m["content"];
      if (content.is_string()) {
        message.content = content.get<std::string>();
      } else if (content.is_array()) {
        std::string text;
        for (const OrderedJson& part : content) {
          if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
              !part.contains("text") || !part["text"].is_string()) {
            return error("content parts other than {type: text, text} are not supported");
          }
          text += part["text"].get<std::string>();
        }
        message.content = std::move(text);
      } else if (!content.is_null()) {
        return error("content is neither a string, a list of text parts nor null");
      }
    }
    if (m.contains("reasoning_content") && m["reasoning_content"].is_string()) {
      message.reasoning_content = m["reasoning_content"].get<std::string>();
    }
    if (m.contains("tool_call_id") && m["tool_call_id"].is_string()) {
      message.tool_call_id = m["tool_call_id"].get<std::string>();
    }
    if (m.contains("name") && m["name"].is_string()) message.name = m["name"].get<std::string>();
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) return error("tool_calls is not a list");
      for (const OrderedJson& c : m["tool_calls"]) {
        const OrderedJson& function = c.is_object() && c.contains("function") ? c["function"] : c;
        if (!function.is_object() || !function.contains("name") || !function["name"].is_string()) {
          return error("a tool call has no function name");
        }
        ToolCall call;
        call.name = function["name"].get<std::string>();
        if (c.is_object() && c.contains("id") && c["id"].is_string()) {
          call.id = c["id"].get<std::string>();
        }
        if (function.contains("arguments")) {
          const OrderedJson& arguments = function["arguments"];
          call.arguments_json =
              arguments.is_string() ? arguments.get<std::string>() : arguments.dump();
        } else {
          call.arguments_json = "{}";
        }
        message.tool_calls.push_back(std::move(call));
      }
    }
    out.push_back(std::move(message));
  }
  return out;
}

}  // namespace ringserve::text
