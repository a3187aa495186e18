#include "router/text_stream.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::router {

TextStream::TextStream(const text::Tokenizer* tokenizer, std::vector<std::string> stops)
    : detokenizer_(tokenizer), stops_(std::move(stops)) {}

std::string TextStream::Add(uint32_t token, bool* stop) {
  *stop = false;
  if (stopped_) return "";
  const std::string piece = detokenizer_.Add(token);
  std::string out = stops_.Push(piece);
  if (stops_.stopped()) {
    stopped_ = true;
    *stop = true;
  }
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return "";
  std::string out = stops_.Push(detokenizer_.Flush());
  return out + stops_.Flush();
}

absl::StatusOr<std::unique_ptr<TextCodec>> TextCodec::Load(const std::string& dir) {
  auto codec = std::make_unique<TextCodec>();
  ASSIGN_OR_RETURN(codec->tokenizer_, text::Tokenizer::FromDirectory(dir));
  const std::string& source = codec->tokenizer_->config().chat_template;
  if (!source.empty()) {
    ASSIGN_OR_RETURN(codec->chat_template_, text::ChatTemplate::Create(source));
  }
  return codec;
}

absl::StatusOr<std::vector<uint32_t>> TextCodec::Encode(std::string_view text,
                                                        const Budget& budget) const {
  return tokenizer_->Encode(text, /*add_special_tokens=*/false, budget.max_tokens);
}

absl::StatusOr<std::string> TextCodec::RenderChat(const ringserve::v1::ChatMessages& chat,
                                                  const Budget& budget) const {
  if (chat_template_ == nullptr) {
    return absl::FailedPreconditionError("the model's tokenizer_config.json has no chat_template");
  }
  text::ChatTemplateInputs inputs;
  inputs.json_limits = budget.json;
  inputs.max_output_bytes = budget.max_prompt_bytes;
  for (const auto& m : chat.messages()) {
    text::ChatMessage message;
    message.role = m.role();
    message.content = m.content();
    if (!m.reasoning_content().empty()) message.reasoning_content = m.reasoning_content();
    for (const auto& call : m.tool_calls()) {
      message.tool_calls.push_back({"", call.name(), call.arguments_json()});
    }
    inputs.messages.push_back(std::move(message));
  }
  if (chat.tools_json_size() > 0) {
    inputs.tools = nlohmann::ordered_json::array();
    for (int i = 0; i < chat.tools_json_size(); ++i) {
      absl::StatusOr<nlohmann::ordered_json> tool =
          text::ParseUntrustedJson(chat.tools_json(i), budget.json);
      if (!tool.ok()) {
        return absl::Status(tool.status().code(), absl::StrCat("prompt.messages.tools_json[", i,
                                                               "]: ", tool.status().message()));
      }
      inputs.tools.push_back(*std::move(tool));
    }
  }
  inputs.add_generation_prompt = chat.add_generation_prompt();
  return chat_template_->Render(inputs);
}

absl::StatusOr<std::vector<uint32_t>> TextCodec::EncodeChat(const ringserve::v1::ChatMessages& chat,
                                                            const Budget& budget) const {
  ASSIGN_OR_RETURN(const std::string prompt, RenderChat(chat, budget));
  return Encode(prompt, budget);
}

std::unique_ptr<TextStream> TextCodec::NewStream(std::vector<std::string> stops) const {
  return std::make_unique<TextStream>(tokenizer_.get(), std::move(stops));
}

}  // namespace ringserve::router
