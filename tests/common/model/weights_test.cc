#include "common/model/weights.h"

#include "common/base/mapped_file.h"
#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::model {
namespace {

using ::ringserve::testing::TempDir;

// Rewrites one key of DIR/config.json.
void PatchConfig(const std::string& dir, const std::string& key, nlohmann::json value) {
  auto text = base::ReadFileToString(dir + "/config.json");
  ASSERT_TRUE(text.ok());
  auto j = nlohmann::json::parse(*text);
  j[key] = value;
  ASSERT_TRUE(base::WriteStringToFile(dir + "/config.json", j.dump()).ok());
}

absl::Status LoadStatus(const std::string& dir) {
  kernels::CpuBackend backend(1);
  return HybridModel::Load(dir, &backend, {}).status();
}

TEST(WeightsTest, ReportsTheFirstTensorWithAWrongShape) {
  TempDir dir;
  ringserve::testing::WriteTinyModel(dir.path());
  PatchConfig(dir.path(), "hidden_size", 256);
  const absl::Status s = LoadStatus(dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensor 'model.word_embeddings.weight' has shape [1024, 128]; expected [1024, 256]");
}

TEST(WeightsTest, ReportsAMissingTensorByName) {
  TempDir dir;
  ringserve::testing::WriteTinyModel(dir.path());
  PatchConfig(dir.path(), "num_nextn_predict_layers", 1);
  const absl::Status s = LoadStatus(dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "missing tensor 'model.layers.8.input_layernorm.weight'");
}

TEST(WeightsTest, ExpectedTensorsMatchThePublishedRingMiniInventory) {
  ModelConfig c;
  c.hidden_size = 2048;
  c.num_hidden_layers = 20;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  c.head_dim = 128;
  c.layer_group_size = 5;
  c.intermediate_size = 5120;
  c.moe_intermediate_size = 512;
  c.num_experts = 256;
  c.num_experts_per_tok = 8;
  c.num_shared_experts = 1;
  c.first_k_dense_replace = 1;
  c.vocab_size = 157184;
  const auto tensors = ExpectedTensors(c);
  // model-spec section 2: 14,845 tensors, 16.423B parameters.
  EXPECT_EQ(tensors.size(), 14845u);
  double params = 0;
  for (const auto& t : tensors) {
    double n = 1;
    for (int64_t d : t.shape) n *= static_cast<double>(d);
    params += n;
  }
  EXPECT_NEAR(params / 1e9, 16.423, 0.001);
}

TEST(ConfigTest, RejectsOtherModelTypesAndBadShapes) {
  EXPECT_NE(ModelConfig::FromJson(R"({"model_type": "llama"})")
                .status()
                .message()
                .find("model_type 'llama' is not bailing_moe_linear"),
            std::string::npos);
  EXPECT_NE(ModelConfig::FromJson("{").status().message().find("not a valid JSON"),
            std::string::npos);
  auto tiny = PresetConfig("tiny");
  ASSERT_TRUE(tiny.ok());
  auto j = nlohmann::json::parse(tiny->ToJson());
  j["num_key_value_heads"] = 3;
  EXPECT_NE(ModelConfig::FromJson(j.dump()).status().message().find("not a multiple"),
            std::string::npos);
  j = nlohmann::json::parse(tiny->ToJson());
  j.erase("vocab_size");
  EXPECT_NE(ModelConfig::FromJson(j.dump()).status().message().find("lacks 'vocab_size'"),
            std::string::npos);
}

TEST(ConfigTest, SoftmaxPresetsKeepTheShapeWithEveryLayerSoftmax) {
  for (const std::string base : {"tiny", "small"}) {
    auto hybrid = PresetConfig(base);
    auto softmax = PresetConfig(base + "-softmax");
    ASSERT_TRUE(hybrid.ok() && softmax.ok()) << base;
    EXPECT_EQ(softmax->num_softmax_layers(), softmax->num_hidden_layers);
    EXPECT_EQ(softmax->num_linear_layers(), 0);
    EXPECT_GT(hybrid->num_linear_layers(), 0);
    EXPECT_EQ(softmax->hidden_size, hybrid->hidden_size);
    EXPECT_EQ(softmax->num_hidden_layers, hybrid->num_hidden_layers);
    EXPECT_EQ(softmax->num_experts, hybrid->num_experts);
  }
  EXPECT_FALSE(PresetConfig("-softmax").ok());
  EXPECT_FALSE(PresetConfig("huge-softmax").ok());
}

TEST(ConfigTest, LayerLayoutAndDecayFollowTheSpec) {
  ModelConfig c;
  c.num_hidden_layers = 20;
  c.layer_group_size = 5;
  c.num_attention_heads = 16;
  std::vector<int64_t> full;
  for (int64_t i = 0; i < 20; ++i) {
    if (c.IsSoftmaxLayer(i)) full.push_back(i);
  }
  EXPECT_EQ(full, (std::vector<int64_t>{4, 9, 14, 19}));
  // Spec 3.3.1: mini, layer 0, head 0: lambda = exp(g) = 0.475 (HF factor 1.05264).
  EXPECT_NEAR(std::exp(c.LogDecay(0, DecayVariant::kHf)[0]), 0.475, 0.001);
  EXPECT_NEAR(-c.LogDecay(0, DecayVariant::kSglang)[0], std::pow(2.0, -0.5) * 1.00001, 1e-6);
  EXPECT_NEAR(-c.LogDecay(18, DecayVariant::kSglang)[15] / std::pow(2.0, -8.0), 0.05264, 1e-4);
}

}  // namespace
}  // namespace ringserve::model
