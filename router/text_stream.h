#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/text/chat_template.h"
#include "common/text/detokenizer.h"
#include "common/text/stop_matcher.h"
#include "common/text/tokenizer.h"
#include "common/text/untrusted_json.h"
#include "ringserve/v1/generation.pb.h"

namespace ringserve::router {

// The text of one request's output: incremental UTF-8-safe detokenization plus stop strings
// (matched across token boundaries, trimmed from the output). Not thread-safe; owned by the
// request's flow.
class TextStream {
 public:
  TextStream(const text::Tokenizer* tokenizer, std::vector<std::string> stops);
  // Text to emit after `token`; sets *stop when a stop string completed (the text before it is
  // returned, the stop string and anything after are dropped).
  std::string Add(uint32_t token, bool* stop);
  // Text held back at the end of the stream.
  std::string Flush();

 private:
  text::IncrementalDetokenizer detokenizer_;
  text::StopMatcher stops_;
  bool stopped_ = false;
};

// The model's tokenizer and chat template, as the router uses them. Immutable; thread-safe.
class TextCodec {
 public:
  // Loads tokenizer.json and tokenizer_config.json from a checkpoint directory.
  static absl::StatusOr<std::unique_ptr<TextCodec>> Load(const std::string& dir);

  // Bounds on the work of one encode; exceeding one is ResourceExhausted, naming the limit, and
  // the work stops there.
  struct Budget {
    size_t max_tokens = SIZE_MAX;        // ids of the encoded text
    size_t max_prompt_bytes = SIZE_MAX;  // the rendered chat template
    text::JsonLimits json;               // each tools_json and tool-call arguments_json
  };

  absl::StatusOr<std::vector<uint32_t>> Encode(std::string_view text, const Budget& budget) const;
  // Renders the chat template (with the generation prompt when asked) and encodes it.
  absl::StatusOr<std::vector<uint32_t>> EncodeChat(const ringserve::v1::ChatMessages& chat,
                                                   const Budget& budget) const;
  absl::StatusOr<std::string> RenderChat(const ringserve::v1::ChatMessages& chat,
                                         const Budget& budget) const;
  std::unique_ptr<TextStream> NewStream(std::vector<std::string> stops) const;
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<text::ChatTemplate> chat_template_;
};

}  // namespace ringserve::router
