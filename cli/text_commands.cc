#include "cli/text_commands.h"

#include <cstdint>
#include <iostream>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli/token_ids.h"
#include "common/base/flags.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace ringserve::cli {
namespace {

// Prints `status` to stderr; returns 2 for bad usage or input, 1 for other failures.
int Fail(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

absl::StatusOr<std::unique_ptr<text::Tokenizer>> LoadTokenizer(const base::FlagSet& flags) {
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model DIR is required");
  return text::Tokenizer::FromDirectory(flags.Get("model"));
}

absl::Status ParseFlags(base::FlagSet* flags, const std::vector<std::string>& args) {
  RETURN_IF_ERROR(flags->Parse(args));
  if (!flags->positional().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", flags->positional()[0], "'\n", flags->Usage()));
  }
  return absl::OkStatus();
}

absl::Status Tokenize(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl tokenize");
  flags.String("model", "", "checkpoint directory with tokenizer.json");
  flags.String("text", "", "text to tokenize");
  flags.String("file", "", "file whose contents to tokenize");
  flags.Bool("add-special-tokens", false, "add bos/eos as the tokenizer config asks");
  RETURN_IF_ERROR(ParseFlags(&flags, args));
  if (flags.IsSet("text") == flags.IsSet("file")) {
    return absl::InvalidArgumentError("give exactly one of --text and --file");
  }
  std::string input = flags.Get("text");
  if (flags.IsSet("file")) {
    ASSIGN_OR_RETURN(input, base::ReadFileToString(flags.Get("file")));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<text::Tokenizer> tokenizer, LoadTokenizer(flags));
  ASSIGN_OR_RETURN(std::vector<uint32_t> ids,
                   tokenizer->Encode(input, flags.GetBool("add-special-tokens")));
  std::cout << nlohmann::json(ids).dump() << "\n";
  return absl::OkStatus();
}

absl::Status Detokenize(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl detokenize");
  flags.String("model", "", "checkpoint directory with tokenizer.json");
  AddTokenIdFlags(&flags, "ids");
  flags.Bool("skip-special-tokens", false, "leave special tokens out of the text");
  RETURN_IF_ERROR(ParseFlags(&flags, args));
  if (!flags.IsSet("ids") && !flags.IsSet("ids-file")) {
    return absl::InvalidArgumentError("--ids or --ids-file is required");
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> values, TokenIds(flags, "ids"));
  std::vector<uint32_t> ids;
  for (int64_t value : values) {
    if (value < 0 || value > UINT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", value, " is outside [0, ", UINT32_MAX, "]"));
    }
    ids.push_back(static_cast<uint32_t>(value));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<text::Tokenizer> tokenizer, LoadTokenizer(flags));
  std::cout << tokenizer->Decode(ids, flags.GetBool("skip-special-tokens"));
  return absl::OkStatus();
}

absl::Status RenderChatTemplate(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl chat-template");
  flags.String("model", "", "checkpoint directory with tokenizer_config.json");
  flags.String("messages-file", "", "JSON list of messages, or {messages, tools, ...}");
  flags.Bool("add-generation-prompt", false, "end with the assistant's turn opening");
  RETURN_IF_ERROR(ParseFlags(&flags, args));
  if (flags.Get("messages-file").empty()) {
    return absl::InvalidArgumentError("--messages-file is required");
  }
  ASSIGN_OR_RETURN(std::string file_text, base::ReadFileToString(flags.Get("messages-file")));
  const auto json = nlohmann::ordered_json::parse(file_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !(json.is_array() || json.is_object())) {
    return absl::InvalidArgumentError(
        absl::StrCat(flags.Get("messages-file"), " is not a JSON list of messages or an object"));
  }
  text::ChatTemplateInputs inputs;
  const nlohmann::ordered_json* messages = &json;
  if (json.is_object()) {
    if (!json.contains("messages")) {
      return absl::InvalidArgumentError(
          absl::StrCat(flags.Get("messages-file"), " has no \"messages\""));
    }
    messages = &json["messages"];
    for (auto it = json.begin(); it != json.end(); ++it) {
      if (it.key() == "messages") continue;
      if (it.key() == "tools") {
        inputs.tools = it.value();
      } else if (it.key() == "add_generation_prompt") {
        inputs.add_generation_prompt = it.value().is_boolean() && it.value().get<bool>();
      } else {
        inputs.extra_vars[it.key()] = it.value();
      }
    }
  }
  ASSIGN_OR_RETURN(inputs.messages, text::ChatMessagesFromJson(*messages));
  if (flags.GetBool("add-generation-prompt")) inputs.add_generation_prompt = true;

  ASSIGN_OR_RETURN(std::unique_ptr<text::Tokenizer> tokenizer, LoadTokenizer(flags));
  if (tokenizer->config().chat_template.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(flags.Get("model"), " has no chat template in tokenizer_config.json"));
  }
  const text::TokenizerConfig& config = tokenizer->config();
  // Like HuggingFace's apply_chat_template, the special tokens are template variables too.
  const std::pair<const char*, std::string> special_tokens[] = {{"bos_token", config.bos_token},
                                                                {"eos_token", config.eos_token},
                                                                {"pad_token", config.pad_token}};
  for (const auto& [name, value] : special_tokens) {
    if (!value.empty() && !inputs.extra_vars.contains(name)) inputs.extra_vars[name] = value;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<text::ChatTemplate> chat_template,
                   text::ChatTemplate::Create(config.chat_template));
  ASSIGN_OR_RETURN(std::string prompt, chat_template->Render(inputs));
  std::cout << prompt;
  return absl::OkStatus();
}

int Run(absl::Status (*command)(const std::vector<std::string>&),
        const std::vector<std::string>& args) {
  const absl::Status status = command(args);
  std::cout.flush();
  if (base::IsHelp(status)) {
    std::cout << status.message();
    return 0;
  }
  return status.ok() ? 0 : Fail(status);
}

}  // namespace

int RunTokenize(const std::vector<std::string>& args) { return Run(Tokenize, args); }
int RunDetokenize(const std::vector<std::string>& args) { return Run(Detokenize, args); }
int RunChatTemplate(const std::vector<std::string>& args) { return Run(RenderChatTemplate, args); }

}  // namespace ringserve::cli
