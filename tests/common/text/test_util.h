#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/text/bpe_trainer.h"
#include "common/text/byte_level.h"
#include "common/text/tokenizer.h"
#include "common/text/training_corpus.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ringserve::text::testing {

// A tokenizer.json with the 256 byte tokens (ids 0..255 in GPT-2 order), then one token per
// merge (ids 256..) and the given added tokens; `overrides` replaces top-level fields.
inline std::string TinyTokenizerJson(const std::vector<std::pair<std::string, std::string>>& merges,
                                     const std::vector<std::string>& added = {},
                                     const nlohmann::json& overrides = nlohmann::json::object()) {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  nlohmann::json vocab = nlohmann::json::object();
  uint32_t id = 0;
  for (uint8_t b : alphabet.BytesInOrder()) vocab[alphabet.Encode(std::string(1, b))] = id++;
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& [left, right] : merges) {
    const std::string l = alphabet.Encode(left);
    const std::string r = alphabet.Encode(right);
    if (!vocab.contains(l + r)) vocab[l + r] = id++;
    merge_list.push_back(nlohmann::json::array({l, r}));
  }
  nlohmann::json added_list = nlohmann::json::array();
  for (const std::string& token : added) {
    added_list.push_back({{"id", id++},
                          {"content", token},
                          {"special", true},
                          {"normalized", false},
                          {"lstrip", false},
                          {"rstrip", false},
                          {"single_word", false}});
  }
  nlohmann::json root = {
      {"added_tokens", added_list},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         nlohmann::json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", std::string(kRingSplitPattern)}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
  for (auto it = overrides.begin(); it != overrides.end(); ++it) root[it.key()] = it.value();
  return root.dump();
}

// A tokenizer trained like WriteTokenizerFiles(dir, vocab_size) does, built in memory.
inline std::unique_ptr<Tokenizer> TrainedTokenizer(int vocab_size) {
  std::vector<std::string> specials(kRingSpecialTokens.begin(), kRingSpecialTokens.end());
  absl::StatusOr<std::string> json =
      TrainByteLevelBpe(DefaultTrainingCorpus(), vocab_size, specials);
  EXPECT_TRUE(json.ok()) << json.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::FromJson(*json, R"({"bos_token": "<|startoftext|>", "eos_token": "<|role_end|>",
                 "add_bos_token": false, "add_eos_token": false})");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// A fresh, empty directory under the test's temporary directory.
inline std::string MakeTempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ringserve_text_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace ringserve::text::testing
