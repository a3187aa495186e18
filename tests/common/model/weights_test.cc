#include "common/model/weights.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

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

// Resident and proportional set sizes (kB) of process `pid`'s mappings of `path`.
struct Residency {
  int64_t rss_kb = 0;
  int64_t pss_kb = 0;
};
Residency MappingResidency(pid_t pid, const std::string& path) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  Residency out;
  bool inside = false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string first, value;
    fields >> first >> value;
    if (first.back() != ':') {  // a mapping's header: address range, ..., path
      inside = line.size() >= path.size() &&
               line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (inside && first == "Rss:") {
      out.rss_kb += std::stoll(value);
    } else if (inside && first == "Pss:") {
      out.pss_kb += std::stoll(value);
    }
  }
  return out;
}

// Anonymous memory (kB) of this process, from /proc/self/smaps_rollup.
int64_t AnonymousKb() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  int64_t kb = 0;
  while (in >> key) {
    if (key == "Anonymous:" && in >> kb) return kb;
  }
  return -1;
}

// Reads one byte of every row of every matrix the forward pass uses; returns their sum.
int TouchWeights(const ModelWeights& w) {
  int sum = 0;
  auto touch = [&](const kernels::Weight& m) {
    for (int64_t r = 0; r < m.rows; ++r) sum += *static_cast<const volatile uint8_t*>(m.Row(r));
  };
  touch(w.embedding);
  touch(w.lm_head);
  for (const LayerWeights& l : w.layers) {
    for (const kernels::Weight* m : {&l.in_proj, &l.dense, &l.mlp_gate_up, &l.mlp_down, &l.router,
                                     &l.shared_gate_up, &l.shared_down}) {
      touch(*m);
    }
    for (const auto& e : l.expert_gate_up) touch(e);
    for (const auto& e : l.expert_down) touch(e);
  }
  return sum;
}

// Two processes serving one checkpoint on the CPU hold one copy of its weights: the page
// cache's, mapped by both (each process's proportional share is half), and no private copy.
TEST(WeightsTest, TwoProcessesShareTheCheckpointPages) {
  TempDir dir;
  ringserve::testing::WriteTinyModel(dir.path());
  const std::string file = std::filesystem::canonical(dir.path() + "/model.safetensors").string();
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    kernels::CpuBackend backend(1);
    auto model = HybridModel::Load(dir.path(), &backend, {});
    const char byte = model.ok() ? static_cast<char>(TouchWeights((*model)->weights()) | 1) : 0;
    (void)!::write(ready[1], &byte, 1);
    pollfd wait{done[0], POLLIN, 0};
    ::poll(&wait, 1, 60000);
    ::_exit(model.ok() ? 0 : 1);
  }
  const int64_t anon_before = AnonymousKb();
  kernels::CpuBackend backend(1);
  auto model = HybridModel::Load(dir.path(), &backend, {});
  ASSERT_TRUE(model.ok()) << model.status();
  TouchWeights((*model)->weights());
  const int64_t anon_growth = AnonymousKb() - anon_before;
  pollfd wait{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&wait, 1, 60000), 1) << "the child did not load the model in time";
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  const Residency mine = MappingResidency(::getpid(), file);
  const Residency theirs = MappingResidency(child, file);
  ASSERT_EQ(::write(done[1], &byte, 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);

  const int64_t weights_kb = static_cast<int64_t>((*model)->weights().checkpoint_bytes / 1024);
  EXPECT_NE(byte, 0) << "the child could not load the model";
  for (const Residency& r : {mine, theirs}) {
    EXPECT_GE(r.rss_kb, weights_kb * 9 / 10) << "the weights are not read from the mapping";
    EXPECT_LE(r.pss_kb, r.rss_kb * 6 / 10) << "the processes do not share the mapped pages";
  }
  EXPECT_LT(anon_growth, weights_kb / 4) << "loading made private copies of the weights";
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
