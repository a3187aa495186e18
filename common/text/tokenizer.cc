#include "common/text/tokenizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/text/byte_level.h"
#include "common/text/utf8.h"
#include "nlohmann/json.hpp"

namespace ringserve::text {
namespace {

// One past the largest token id a tokenizer.json may use: far above the vocabularies of real
// checkpoints (Ring: 157,184 ids), and low enough that the id tables stay small.
constexpr uint64_t kMaxTokenIds = uint64_t{1} << 22;

using Json = nlohmann::json;

// The regex of GPT-2's ByteLevel pre-tokenizer (use_regex=true).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

bool IsWhiteSpace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }
bool IsWordChar(char32_t c) { return c == '_' || u_isalnum(static_cast<UChar32>(c)); }

// The code point that ends just before `pos` in well-formed UTF-8.
char32_t CodePointBefore(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return NextCodePoint(text, &start);
}

absl::Status TooManyTokens(size_t max_tokens) {
  return absl::ResourceExhaustedError(
      absl::StrCat("text encodes to more than the limit of ", max_tokens, " tokens"));
}

absl::Status Invalid(std::string_view what, std::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", std::string(detail)));
}

std::string TypeOf(const Json& node) {
  if (node.is_object() && node.contains("type") && node["type"].is_string()) {
    return node["type"].get<std::string>();
  }
  return "";
}

// The member `key` of `node`, or null when `node` is not an object or lacks it. No copy.
const Json& Field(const Json& node, const char* key) {
  static const Json* const kNull = new Json();
  if (!node.is_object()) return *kNull;
  auto it = node.find(key);
  return it == node.end() ? *kNull : *it;
}

absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool BoolOr(const Json& node, const char* key, bool fallback) {
  if (!node.is_object()) return fallback;
  auto it = node.find(key);
  if (it == node.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}

// A tokenizer_config.json token entry: a string, or an object with "content".
std::string TokenContent(const Json& node) {
  if (node.is_string()) return node.get<std::string>();
  if (node.is_object() && node.contains("content") && node["content"].is_string()) {
    return node["content"].get<std::string>();
  }
  return "";
}

}  // namespace

// Per-call scratch space of Encode: the cache of words already split into ids, and buffers
// reused across words.
class Tokenizer::EncodeState {
 public:
  struct Symbol {
    uint32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t left;
    int32_t right;
    uint32_t left_id;
    uint32_t right_id;
    uint32_t merged_id;
    // Min-heap on (rank, left): the lowest rank first, the leftmost among equals.
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };

  // Words already encoded in this call: where their ids start in the output, and how many.
  absl::flat_hash_map<absl::string_view, std::pair<size_t, size_t>> cache;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::deque<std::string> arena;  // owns pieces that are not views of the input
};

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  const std::filesystem::path root(dir);
  ASSIGN_OR_RETURN(std::string tokenizer_json,
                   base::ReadFileToString((root / "tokenizer.json").string()));
  std::string config_json;
  std::string generation_json;
  std::error_code ec;
  if (std::filesystem::exists(root / "tokenizer_config.json", ec)) {
    ASSIGN_OR_RETURN(config_json,
                     base::ReadFileToString((root / "tokenizer_config.json").string()));
  }
  if (std::filesystem::exists(root / "generation_config.json", ec)) {
    ASSIGN_OR_RETURN(generation_json,
                     base::ReadFileToString((root / "generation_config.json").string()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                   FromJson(tokenizer_json, config_json, generation_json));
  if (std::filesystem::exists(root / "chat_template.jinja", ec)) {
    ASSIGN_OR_RETURN(tokenizer->config_.chat_template,
                     base::ReadFileToString((root / "chat_template.jinja").string()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json,
    std::string_view generation_config_json) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  RETURN_IF_ERROR(tokenizer->LoadTokenizerJson(tokenizer_json));
  if (!tokenizer_config_json.empty()) {
    RETURN_IF_ERROR(tokenizer->LoadConfigJson(tokenizer_config_json));
  }
  if (!generation_config_json.empty()) {
    RETURN_IF_ERROR(tokenizer->LoadGenerationConfigJson(generation_config_json));
  }
  RETURN_IF_ERROR(tokenizer->Finish());
  return tokenizer;
}

absl::Status Tokenizer::LoadTokenizerJson(std::string_view json_text) {
  constexpr std::string_view kWhat = "tokenizer.json";
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Invalid(kWhat, "not a JSON object");
  try {
    // Model.
    const Json& model = Field(root, "model");
    const std::string model_type = TypeOf(model);
    if (!model.is_object() || (model_type != "BPE" && !model_type.empty()) ||
        !model.contains("merges")) {
      return Invalid(kWhat, absl::StrCat("model type '", model_type,
                                         "' is not supported; only byte-level BPE is"));
    }
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        model["dropout"].get<double>() != 0.0) {
      return Invalid(kWhat, "BPE dropout is not supported");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
        return Invalid(kWhat, absl::StrCat("BPE option ", key, " is not supported"));
      }
    }
    if (BoolOr(model, "byte_fallback", false)) {
      return Invalid(kWhat, "BPE byte_fallback is not supported (byte-level BPE needs none)");
    }
    ignore_merges_ = BoolOr(model, "ignore_merges", false);
    const Json& vocab = Field(model, "vocab");
    if (!vocab.is_object()) return Invalid(kWhat, "model.vocab is not an object");

    uint32_t max_id = 0;
    std::vector<std::pair<std::string, uint32_t>> entries;
    entries.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_unsigned()) {
        return Invalid(kWhat, absl::StrCat("vocab entry '", it.key(), "' has no valid id"));
      }
      const uint64_t id = it.value().get<uint64_t>();
      if (id >= kMaxTokenIds) {
        return Invalid(kWhat, absl::StrCat("vocab id ", id, " exceeds the limit ", kMaxTokenIds));
      }
      max_id = std::max(max_id, static_cast<uint32_t>(id));
      entries.emplace_back(it.key(), static_cast<uint32_t>(id));
    }
    const Json& added = Field(root, "added_tokens");
    if (!added.is_null() && !added.is_array()) {
      return Invalid(kWhat, "added_tokens is not a list");
    }
    for (const Json& entry : added) {
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_unsigned() ||
          !entry.contains("content") || !entry["content"].is_string()) {
        return Invalid(kWhat, absl::StrCat("added token ", entry.dump(), " lacks id or content"));
      }
      AddedToken token;
      const uint64_t id = entry["id"].get<uint64_t>();
      if (id >= kMaxTokenIds) {
        return Invalid(kWhat,
                       absl::StrCat("added token id ", id, " exceeds the limit ", kMaxTokenIds));
      }
      token.id = static_cast<uint32_t>(id);
      token.content = entry["content"].get<std::string>();
      if (token.content.empty()) return Invalid(kWhat, "an added token is empty");
      RETURN_IF_ERROR(ValidateUtf8(token.content));
      token.special = BoolOr(entry, "special", false);
      token.lstrip = BoolOr(entry, "lstrip", false);
      token.rstrip = BoolOr(entry, "rstrip", false);
      token.single_word = BoolOr(entry, "single_word", false);
      token.normalized = BoolOr(entry, "normalized", !token.special);
      max_id = std::max(max_id, token.id);
      added_tokens_.push_back(std::move(token));
    }

    const size_t size = entries.empty() && added_tokens_.empty() ? 0 : size_t{max_id} + 1;
    id_to_token_.assign(size, "");
    is_special_.assign(size, false);
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    for (auto& [token, id] : entries) {
      RETURN_IF_ERROR(ValidateUtf8(token));
      if (std::optional<std::string> bytes = alphabet.Decode(token); bytes.has_value()) {
        bpe_bytes_to_id_.emplace(std::move(*bytes), id);
      }
      token_to_id_[token] = id;
      id_to_token_[id] = std::move(token);
    }
    for (const AddedToken& token : added_tokens_) {
      token_to_id_[token.content] = token.id;
      id_to_token_[token.id] = token.content;
      is_special_[token.id] = token.special;
    }

    std::optional<uint32_t> unk_id;
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const std::string unk = model["unk_token"].get<std::string>();
      auto it = token_to_id_.find(unk);
      if (it == token_to_id_.end()) {
        return Invalid(kWhat, absl::StrCat("unk_token '", unk, "' is not in the vocabulary"));
      }
      unk_id = it->second;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = bpe_bytes_to_id_.find(std::string(1, static_cast<char>(b)));
      if (it != bpe_bytes_to_id_.end()) {
        byte_ids_[b] = it->second;
      } else if (unk_id.has_value()) {
        byte_ids_[b] = *unk_id;
      } else {
        return Invalid(kWhat, absl::StrCat("the byte-level vocabulary lacks byte 0x",
                                           absl::Hex(b, absl::kZeroPad2)));
      }
    }

    // Merges, as "a b" strings or [a, b] pairs; rank is the position in the list.
    const Json& merges = model["merges"];
    if (!merges.is_array()) return Invalid(kWhat, "model.merges is not a list");
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& merge = merges[rank];
      std::string left;
      std::string right;
      if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
          return Invalid(kWhat, absl::StrCat("merge ", rank, " '", text, "' is not two tokens"));
        }
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return Invalid(kWhat, absl::StrCat("merge ", rank, " ", merge.dump(), " is malformed"));
      }
      auto left_it = token_to_id_.find(left);
      auto right_it = token_to_id_.find(right);
      auto merged_it = token_to_id_.find(left + right);
      if (left_it == token_to_id_.end() || right_it == token_to_id_.end() ||
          merged_it == token_to_id_.end()) {
        return Invalid(kWhat, absl::StrCat("merge ", rank, " '", left, " ", right,
                                           "' uses a token missing from the vocabulary"));
      }
      const uint64_t key = (uint64_t{left_it->second} << 32) | right_it->second;
      merges_.emplace(key, Merge{static_cast<uint32_t>(rank), merged_it->second});
    }

    // Normalizer.
    const Json& normalizer = Field(root, "normalizer");
    std::vector<const Json*> normalizer_nodes;
    if (TypeOf(normalizer) == "Sequence") {
      for (const Json& node : Field(normalizer, "normalizers")) {
        normalizer_nodes.push_back(&node);
      }
    } else if (!normalizer.is_null()) {
      normalizer_nodes.push_back(&normalizer);
    }
    for (const Json* node : normalizer_nodes) {
      const std::string type = TypeOf(*node);
      if (type == "NFC") {
        normalizers_.push_back(NormalForm::kNfc);
      } else if (type == "NFD") {
        normalizers_.push_back(NormalForm::kNfd);
      } else if (type == "NFKC") {
        normalizers_.push_back(NormalForm::kNfkc);
      } else if (type == "NFKD") {
        normalizers_.push_back(NormalForm::kNfkd);
      } else {
        return Invalid(kWhat, absl::StrCat("normalizer '", type,
                                           "' is not supported (null, NFC, NFD, NFKC, NFKD and "
                                           "Sequence of those are)"));
      }
    }

    // Pre-tokenizer.
    const Json& pre_tokenizer = Field(root, "pre_tokenizer");
    std::vector<const Json*> steps;
    if (TypeOf(pre_tokenizer) == "Sequence") {
      for (const Json& node : Field(pre_tokenizer, "pretokenizers")) {
        steps.push_back(&node);
      }
    } else if (!pre_tokenizer.is_null()) {
      steps.push_back(&pre_tokenizer);
    }
    bool byte_level = false;
    for (const Json* node : steps) {
      const std::string type = TypeOf(*node);
      PreTokenizerStep step;
      if (byte_level) {
        return Invalid(kWhat,
                       absl::StrCat("pre-tokenizer '", type, "' after ByteLevel is not supported"));
      }
      if (type == "Split") {
        const Json& pattern = Field(*node, "pattern");
        if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
          ASSIGN_OR_RETURN(step.regex, Regex::Create(pattern["Regex"].get<std::string>()));
        } else if (pattern.contains("String") && pattern["String"].is_string() &&
                   !pattern["String"].get<std::string>().empty()) {
          step.literal = pattern["String"].get<std::string>();
        } else {
          return Invalid(kWhat, absl::StrCat("Split pattern ", pattern.dump(), " is malformed"));
        }
        const Json& behavior_node = Field(*node, "behavior");
        const std::string behavior =
            behavior_node.is_string() ? behavior_node.get<std::string>() : "";
        if (behavior == "Removed") {
          step.behavior = SplitBehavior::kRemoved;
        } else if (behavior == "Isolated") {
          step.behavior = SplitBehavior::kIsolated;
        } else if (behavior == "MergedWithPrevious") {
          step.behavior = SplitBehavior::kMergedWithPrevious;
        } else if (behavior == "MergedWithNext") {
          step.behavior = SplitBehavior::kMergedWithNext;
        } else if (behavior == "Contiguous") {
          step.behavior = SplitBehavior::kContiguous;
        } else {
          return Invalid(kWhat, absl::StrCat("Split behavior '", behavior, "' is unknown"));
        }
        step.invert = BoolOr(*node, "invert", false);
      } else if (type == "Digits") {
        ASSIGN_OR_RETURN(step.regex, Regex::Create(R"(\p{N})"));
        step.behavior = BoolOr(*node, "individual_digits", false) ? SplitBehavior::kIsolated
                                                                  : SplitBehavior::kContiguous;
      } else if (type == "ByteLevel") {
        step.kind = PreTokenizerStep::Kind::kByteLevel;
        step.add_prefix_space = BoolOr(*node, "add_prefix_space", true);
        if (BoolOr(*node, "use_regex", true)) {
          ASSIGN_OR_RETURN(step.regex, Regex::Create(kGpt2Pattern));
        }
        byte_level = true;
      } else {
        return Invalid(kWhat, absl::StrCat("pre-tokenizer '", type,
                                           "' is not supported (Split, Digits and ByteLevel are)"));
      }
      pre_tokenizer_.push_back(std::move(step));
    }
    if (!byte_level) {
      return Invalid(kWhat,
                     "the pre-tokenizer has no ByteLevel step; only byte-level BPE is "
                     "supported");
    }

    // Post-processor: only its single-sequence template matters for ids.
    const Json& post = Field(root, "post_processor");
    std::vector<const Json*> processors;
    if (TypeOf(post) == "Sequence") {
      for (const Json& node : Field(post, "processors")) processors.push_back(&node);
    } else if (!post.is_null()) {
      processors.push_back(&post);
    }
    for (const Json* node : processors) {
      const std::string type = TypeOf(*node);
      if (type == "ByteLevel") continue;
      if (type != "TemplateProcessing") {
        return Invalid(kWhat, absl::StrCat("post-processor '", type,
                                           "' is not supported (ByteLevel and "
                                           "TemplateProcessing are)"));
      }
      const Json& specials = Field(*node, "special_tokens");
      bool seen_sequence = false;
      for (const Json& piece : Field(*node, "single")) {
        if (piece.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        const Json& name_node = Field(Field(piece, "SpecialToken"), "id");
        const std::string name = name_node.is_string() ? name_node.get<std::string>() : "";
        if (!specials.contains(name) || !specials[name].contains("ids")) {
          return Invalid(kWhat, absl::StrCat("template token '", name, "' has no ids"));
        }
        for (const Json& id : specials[name]["ids"]) {
          if (!id.is_number_unsigned() || id.get<uint64_t>() >= kMaxTokenIds) {
            return Invalid(kWhat, absl::StrCat("template token '", name, "' has id ", id.dump(),
                                               ", which is not a token id"));
          }
          (seen_sequence ? template_suffix_ : template_prefix_)
              .push_back(static_cast<uint32_t>(id.get<uint64_t>()));
        }
      }
    }

    // Decoder.
    const Json& decoder = Field(root, "decoder");
    if (TypeOf(decoder) != "ByteLevel") {
      return Invalid(
          kWhat, absl::StrCat("decoder '", TypeOf(decoder), "' is not supported (ByteLevel is)"));
    }
  } catch (const Json::exception& e) {
    return Invalid(kWhat, e.what());
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::LoadConfigJson(std::string_view json_text) {
  constexpr std::string_view kWhat = "tokenizer_config.json";
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Invalid(kWhat, "not a JSON object");
  config_.bos_token = TokenContent(Field(root, "bos_token"));
  config_.eos_token = TokenContent(Field(root, "eos_token"));
  config_.pad_token = TokenContent(Field(root, "pad_token"));
  if (root.contains("add_bos_token") && root["add_bos_token"].is_boolean()) {
    config_.add_bos_token = root["add_bos_token"].get<bool>();
  }
  if (root.contains("add_eos_token") && root["add_eos_token"].is_boolean()) {
    config_.add_eos_token = root["add_eos_token"].get<bool>();
  }
  const Json& chat_template = Field(root, "chat_template");
  if (chat_template.is_string()) {
    config_.chat_template = chat_template.get<std::string>();
  } else if (chat_template.is_array()) {
    // Named templates: take "default", else the first.
    for (const Json& entry : chat_template) {
      if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) {
        continue;
      }
      if (config_.chat_template.empty() || Field(entry, "name") == "default") {
        config_.chat_template = entry["template"].get<std::string>();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::LoadGenerationConfigJson(std::string_view json_text) {
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return Invalid("generation_config.json", "not a JSON object");
  }
  const Json& eos = Field(root, "eos_token_id");
  auto add = [this](const Json& id) {
    if (id.is_number_unsigned()) stop_token_ids_.push_back(id.get<uint32_t>());
  };
  if (eos.is_array()) {
    for (const Json& id : eos) add(id);
  } else {
    add(eos);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Finish() {
  // Decoded bytes of every id, as HuggingFace's ByteLevel decoder gives them: a token whose
  // characters are all in the byte alphabet stands for those bytes, any other for its own text.
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  id_bytes_.resize(id_to_token_.size());
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    std::optional<std::string> bytes = alphabet.Decode(id_to_token_[id]);
    id_bytes_[id] = bytes.has_value() ? std::move(*bytes) : id_to_token_[id];
  }

  for (const PreTokenizerStep& step : pre_tokenizer_) {
    drops_pieces_ = drops_pieces_ || step.behavior == SplitBehavior::kRemoved;
  }
  for (const auto& [bytes, id] : bpe_bytes_to_id_) {
    max_bpe_token_bytes_ = std::max(max_bpe_token_bytes_, bytes.size());
  }

  // Added-token matchers: raw text first, then normalized text.
  for (uint32_t i = 0; i < added_tokens_.size(); ++i) {
    const AddedToken& token = added_tokens_[i];
    AddedTokenMatcher& matcher =
        token.normalized && !normalizers_.empty() ? normalized_matcher_ : raw_matcher_;
    std::string content = token.content;
    if (&matcher == &normalized_matcher_) {
      ASSIGN_OR_RETURN(content, Normalize(content));
    }
    matcher.contents.push_back(std::move(content));
    matcher.token_index.push_back(i);
  }
  for (AddedTokenMatcher* matcher : {&raw_matcher_, &normalized_matcher_}) {
    for (uint32_t i = 0; i < matcher->contents.size(); ++i) {
      matcher->by_first_byte[static_cast<uint8_t>(matcher->contents[i][0])].push_back(i);
    }
    for (auto& candidates : matcher->by_first_byte) {
      std::stable_sort(candidates.begin(), candidates.end(), [matcher](uint32_t a, uint32_t b) {
        return matcher->contents[a].size() > matcher->contents[b].size();
      });
    }
  }

  // Post-processing from the config's add_bos_token / add_eos_token when it sets them.
  if (config_.add_bos_token.has_value() || config_.add_eos_token.has_value()) {
    template_prefix_.clear();
    template_suffix_.clear();
    if (config_.add_bos_token.value_or(false)) {
      const std::optional<uint32_t> bos = bos_token_id();
      if (!bos.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("add_bos_token is set but bos_token '",
                                                       config_.bos_token, "' is not a token"));
      }
      template_prefix_.push_back(*bos);
    }
    if (config_.add_eos_token.value_or(false)) {
      const std::optional<uint32_t> eos = eos_token_id();
      if (!eos.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("add_eos_token is set but eos_token '",
                                                       config_.eos_token, "' is not a token"));
      }
      template_suffix_.push_back(*eos);
    }
  }
  for (const std::vector<uint32_t>* ids : {&template_prefix_, &template_suffix_}) {
    for (uint32_t id : *ids) {
      if (id >= vocab_size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("post-processor id ", id, " exceeds the vocabulary size ", vocab_size()));
      }
    }
  }

  std::vector<uint32_t> stops;
  if (const std::optional<uint32_t> eos = eos_token_id(); eos.has_value()) stops.push_back(*eos);
  for (uint32_t id : stop_token_ids_) {
    if (std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  }
  stop_token_ids_ = std::move(stops);
  return absl::OkStatus();
}

std::optional<uint32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(AsAbsl(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::IdToToken(uint32_t id) const {
  if (id >= id_to_token_.size() || id_to_token_[id].empty()) return std::nullopt;
  return id_to_token_[id];
}

bool Tokenizer::IsSpecial(uint32_t id) const { return id < is_special_.size() && is_special_[id]; }

std::optional<uint32_t> Tokenizer::bos_token_id() const {
  if (config_.bos_token.empty()) return std::nullopt;
  return TokenToId(config_.bos_token);
}

std::optional<uint32_t> Tokenizer::eos_token_id() const {
  if (config_.eos_token.empty()) return std::nullopt;
  return TokenToId(config_.eos_token);
}

std::string_view Tokenizer::TokenBytes(uint32_t id, bool skip_special_tokens) const {
  if (id >= id_bytes_.size() || (skip_special_tokens && is_special_[id])) return {};
  return id_bytes_[id];
}

std::string Tokenizer::Decode(absl::Span<const uint32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (uint32_t id : ids) bytes.append(TokenBytes(id, skip_special_tokens));
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*final=*/true, &text);
  return text;
}

absl::StatusOr<std::string> Tokenizer::Normalize(std::string_view text) const {
  std::string current(text);
  for (NormalForm form : normalizers_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* normalizer = nullptr;
    switch (form) {
      case NormalForm::kNfc:
        normalizer = icu::Normalizer2::getNFCInstance(status);
        break;
      case NormalForm::kNfd:
        normalizer = icu::Normalizer2::getNFDInstance(status);
        break;
      case NormalForm::kNfkc:
        normalizer = icu::Normalizer2::getNFKCInstance(status);
        break;
      case NormalForm::kNfkd:
        normalizer = icu::Normalizer2::getNFKDInstance(status);
        break;
    }
    if (U_FAILURE(status)) {
      return absl::InternalError(absl::StrCat("ICU normalizer: ", u_errorName(status)));
    }
    const icu::StringPiece piece(current.data(), static_cast<int32_t>(current.size()));
    if (normalizer->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) continue;
    status = U_ZERO_ERROR;
    std::string normalized;
    icu::StringByteSink<std::string> sink(&normalized, static_cast<int32_t>(current.size()));
    normalizer->normalizeUTF8(0, piece, sink, nullptr, status);
    if (U_FAILURE(status)) {
      return absl::InternalError(absl::StrCat("ICU normalization failed: ", u_errorName(status)));
    }
    current = std::move(normalized);
  }
  return current;
}

std::vector<Tokenizer::Segment> Tokenizer::SplitAddedTokens(
    std::string_view text, const AddedTokenMatcher& matcher) const {
  std::vector<Segment> segments;
  size_t done = 0;  // end of the last segment emitted
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& candidates = matcher.by_first_byte[static_cast<uint8_t>(text[pos])];
    std::optional<uint32_t> found;
    for (uint32_t c : candidates) {
      const std::string& content = matcher.contents[c];
      if (text.compare(pos, content.size(), content) != 0) continue;
      const AddedToken& token = added_tokens_[matcher.token_index[c]];
      if (token.single_word) {
        const size_t end = pos + content.size();
        if ((pos > 0 && IsWordChar(CodePointBefore(text, pos))) ||
            (end < text.size() && IsWordChar([&] {
               size_t p = end;
               return NextCodePoint(text, &p);
             }()))) {
          continue;
        }
      }
      found = c;
      break;
    }
    if (!found.has_value()) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_tokens_[matcher.token_index[*found]];
    size_t begin = pos;
    size_t end = pos + matcher.contents[*found].size();
    if (token.lstrip) {
      while (begin > done) {
        size_t prev = begin - 1;
        while (prev > done && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t p = prev;
        if (!IsWhiteSpace(NextCodePoint(text, &p))) break;
        begin = prev;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t p = end;
        if (!IsWhiteSpace(NextCodePoint(text, &p))) break;
        end = p;
      }
    }
    if (begin > done) segments.push_back({text.substr(done, begin - done), std::nullopt});
    segments.push_back({text.substr(begin, end - begin), token.id});
    done = end;
    pos = end;
  }
  if (done < text.size()) segments.push_back({text.substr(done), std::nullopt});
  return segments;
}

absl::StatusOr<std::vector<uint32_t>> Tokenizer::Encode(std::string_view text,
                                                        bool add_special_tokens,
                                                        size_t max_tokens) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  const size_t added = add_special_tokens ? template_prefix_.size() + template_suffix_.size() : 0;
  if (added > max_tokens) return TooManyTokens(max_tokens);
  const size_t budget = max_tokens - added;
  std::vector<uint32_t> ids;
  ids.reserve(std::min(text.size() / 3 + 8, budget));
  EncodeState state;
  auto add_id = [&](uint32_t id) -> absl::Status {
    if (ids.size() >= budget) return TooManyTokens(max_tokens);
    ids.push_back(id);
    return absl::OkStatus();
  };
  for (const Segment& segment : SplitAddedTokens(text, raw_matcher_)) {
    if (segment.token_id.has_value()) {
      RETURN_IF_ERROR(add_id(*segment.token_id));
      continue;
    }
    if (normalizers_.empty()) {
      RETURN_IF_ERROR(EncodeText(segment.text, budget, &state, &ids));
      continue;
    }
    ASSIGN_OR_RETURN(std::string normalized, Normalize(segment.text));
    state.arena.push_back(std::move(normalized));
    for (const Segment& inner : SplitAddedTokens(state.arena.back(), normalized_matcher_)) {
      if (inner.token_id.has_value()) {
        RETURN_IF_ERROR(add_id(*inner.token_id));
      } else {
        RETURN_IF_ERROR(EncodeText(inner.text, budget, &state, &ids));
      }
    }
  }
  if (add_special_tokens) ApplyTemplate(&ids);
  return ids;
}

void Tokenizer::ApplyTemplate(std::vector<uint32_t>* ids) const {
  ids->insert(ids->begin(), template_prefix_.begin(), template_prefix_.end());
  ids->insert(ids->end(), template_suffix_.begin(), template_suffix_.end());
}

absl::Status Tokenizer::EncodeText(std::string_view text, size_t max_tokens, EncodeState* state,
                                   std::vector<uint32_t>* ids) const {
  // Unless a step drops what it matches, the pieces cover the text, and a piece of n bytes
  // becomes at least ceil(n / max_bpe_token_bytes_) ids.
  auto at_least = [this](size_t bytes) {
    return (bytes + max_bpe_token_bytes_ - 1) / max_bpe_token_bytes_;
  };
  if (!drops_pieces_ && at_least(text.size()) > max_tokens - ids->size()) {
    return TooManyTokens(max_tokens);
  }
  std::vector<std::string_view> pieces = {text};
  std::vector<std::string_view> next;
  // Marks of one piece: [begin, end) ranges and whether each matched the pattern.
  struct Span {
    size_t begin;
    size_t end;
    bool match;
  };
  std::vector<Span> spans;
  for (const PreTokenizerStep& step : pre_tokenizer_) {
    next.clear();
    for (std::string_view piece : pieces) {
      SplitBehavior behavior = step.behavior;
      bool invert = step.invert;
      if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
        if (step.add_prefix_space && piece[0] != ' ') {
          state->arena.push_back(std::string(" ").append(piece));
          piece = state->arena.back();
        }
        if (step.regex == nullptr) {
          next.push_back(piece);
          continue;
        }
        behavior = SplitBehavior::kIsolated;
        invert = false;
      }
      spans.clear();
      size_t prev = 0;
      auto add_match = [&](size_t begin, size_t end) {
        if (begin > prev) spans.push_back({prev, begin, invert});
        spans.push_back({begin, end, !invert});
        prev = end;
      };
      if (step.regex != nullptr) {
        // Isolated non-empty matches are pieces of their own, and no step drops a piece: the
        // search may stop once they alone pass what is left of the budget.
        const bool bounds = behavior == SplitBehavior::kIsolated && !drops_pieces_;
        const size_t room = max_tokens - ids->size();
        const size_t cap = !bounds ? SIZE_MAX : room > next.size() ? room - next.size() : 0;
        ASSIGN_OR_RETURN(auto matches, step.regex->FindAll(piece, cap));
        size_t nonempty = 0;
        for (const auto& [begin, end] : matches) {
          nonempty += end > begin ? 1 : 0;
          add_match(begin, end);
        }
        if (nonempty > cap) return TooManyTokens(max_tokens);
      } else {
        for (size_t at = piece.find(step.literal); at != std::string_view::npos;
             at = piece.find(step.literal, at + step.literal.size())) {
          add_match(at, at + step.literal.size());
        }
      }
      if (prev < piece.size()) spans.push_back({prev, piece.size(), invert});

      // Combine the spans as HuggingFace's SplitDelimiterBehavior does.
      std::vector<Span> out;
      switch (behavior) {
        case SplitBehavior::kIsolated:
          out = spans;
          break;
        case SplitBehavior::kRemoved:
          for (const Span& s : spans) {
            if (!s.match) out.push_back(s);
          }
          break;
        case SplitBehavior::kMergedWithPrevious: {
          bool previous_match = false;
          for (const Span& s : spans) {
            if (s.match && !previous_match && !out.empty()) {
              out.back().end = s.end;
            } else {
              out.push_back(s);
            }
            previous_match = s.match;
          }
          break;
        }
        case SplitBehavior::kMergedWithNext: {
          bool previous_match = false;
          for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->match && !previous_match && !out.empty()) {
              out.back().begin = it->begin;
            } else {
              out.push_back(*it);
            }
            previous_match = it->match;
          }
          std::reverse(out.begin(), out.end());
          break;
        }
        case SplitBehavior::kContiguous: {
          bool previous_match = false;
          for (const Span& s : spans) {
            if (s.match == previous_match && !out.empty()) {
              out.back().end = s.end;
            } else {
              out.push_back(s);
            }
            previous_match = s.match;
          }
          break;
        }
      }
      for (const Span& s : out) {
        if (s.end > s.begin) next.push_back(piece.substr(s.begin, s.end - s.begin));
      }
    }
    pieces.swap(next);
  }
  size_t fewest = 0;
  for (std::string_view piece : pieces) fewest += at_least(piece.size());
  if (fewest > max_tokens - ids->size()) return TooManyTokens(max_tokens);
  for (std::string_view piece : pieces) {
    EncodeWord(piece, state, ids);
    if (ids->size() > max_tokens) return TooManyTokens(max_tokens);
  }
  return absl::OkStatus();
}

void Tokenizer::EncodeWord(std::string_view bytes, EncodeState* state,
                           std::vector<uint32_t>* ids) const {
  if (bytes.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = bpe_bytes_to_id_.find(AsAbsl(bytes));
    if (it != bpe_bytes_to_id_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (auto it = state->cache.find(AsAbsl(bytes)); it != state->cache.end()) {
    const auto [offset, count] = it->second;
    for (size_t i = 0; i < count; ++i) {
      const uint32_t id = (*ids)[offset + i];
      ids->push_back(id);
    }
    return;
  }

  using Symbol = EncodeState::Symbol;
  using Candidate = EncodeState::Candidate;
  std::vector<Symbol>& symbols = state->symbols;
  std::vector<Candidate>& heap = state->heap;
  const auto n = static_cast<int32_t>(bytes.size());
  symbols.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_ids_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const uint64_t key = (uint64_t{symbols[left].id} << 32) | symbols[right].id;
    auto it = merges_.find(key);
    if (it == merges_.end()) return;
    heap.push_back(
        {it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.left];
    if (!left.alive || left.next != c.right || left.id != c.left_id ||
        symbols[c.right].id != c.right_id) {
      continue;
    }
    Symbol& right = symbols[c.right];
    left.id = c.merged_id;
    left.next = right.next;
    right.alive = false;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev);
    consider(c.left);
  }

  const size_t offset = ids->size();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
  state->cache.emplace(AsAbsl(bytes), std::make_pair(offset, ids->size() - offset));
}

}  // namespace ringserve::text
