// The whole hybrid model on the CUDA backend against the CPU backend: the `tiny` and `small`
// presets with random weights, compared on prefill logits (chunked), teacher-forced greedy decode
// (logits and tokens) and batched decode. The split-bf16 mode is held to tight tolerances; the
// default bf16 mode (activations rounded to bf16 at the tensor cores, as upstream) to looser ones.

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/model/make_model.h"
#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::model {
namespace {

using ::ringserve::testing::TempDir;

std::vector<int32_t> Prompt(int n, int64_t vocab, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + seed * 101 + i * i) % vocab);
  return t;
}

double RelDiff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 1e-12;
  double diff = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return diff / scale;
}

int32_t Argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

struct Tolerance {
  double logits;     // RelDiff of logits
  double token_gap;  // a greedy token may differ only where the CPU's top-two gap is below this
};

struct Case {
  std::string preset;
  bool split_bf16;
  Tolerance tol;
};

// A preset's checkpoint and its CPU model, shared by the tests, with the GPU models by mode.
struct Loaded {
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<kernels::CpuBackend> cpu_backend;
  std::unique_ptr<HybridModel> cpu;
  std::map<bool, std::unique_ptr<kernels::CudaBackend>> gpu_backends;
  std::map<bool, std::unique_ptr<HybridModel>> gpu;
};

class CudaModelTest : public ::testing::TestWithParam<Case> {
 protected:
  static void TearDownTestSuite() {
    if (cache_ == nullptr) return;
    for (auto& [name, loaded] : *cache_) {
      loaded.gpu.clear();
      loaded.cpu.reset();
    }
    delete cache_;
    cache_ = nullptr;
  }

  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    const Case& c = GetParam();
    if (cache_ == nullptr) cache_ = new std::map<std::string, Loaded>();
    Loaded& l = (*cache_)[c.preset];
    if (l.cpu == nullptr) {
      auto config = PresetConfig(c.preset);
      ASSERT_TRUE(config.ok()) << config.status();
      l.dir = std::make_unique<TempDir>();
      ASSERT_TRUE(WriteRandomCheckpoint(*config, l.dir->path(), {7}).ok());
      l.cpu_backend = std::make_unique<kernels::CpuBackend>(0);
      auto cpu_model = HybridModel::Load(l.dir->path(), l.cpu_backend.get(), {});
      ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
      l.cpu = std::move(*cpu_model);
    }
    if (l.gpu[c.split_bf16] == nullptr) {
      kernels::CudaBackendOptions options;
      options.split_bf16 = c.split_bf16;
      auto gpu = kernels::CudaBackend::Create(options);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      auto gpu_model = HybridModel::Load(l.dir->path(), gpu->get(), {});
      ASSERT_TRUE(gpu_model.ok()) << gpu_model.status();
      l.gpu_backends[c.split_bf16] = std::move(*gpu);
      l.gpu[c.split_bf16] = std::move(*gpu_model);
    }
    cpu_ = l.cpu.get();
    gpu_ = l.gpu[c.split_bf16].get();
    gpu_backend_ = l.gpu_backends[c.split_bf16].get();
    dir_ = l.dir->path();
    vocab_ = cpu_->config().vocab_size;
  }

  static std::map<std::string, Loaded>* cache_;
  HybridModel* cpu_ = nullptr;
  HybridModel* gpu_ = nullptr;
  kernels::CudaBackend* gpu_backend_ = nullptr;
  std::string dir_;
  int64_t vocab_ = 0;
};
std::map<std::string, Loaded>* CudaModelTest::cache_ = nullptr;

TEST_P(CudaModelTest, PrefillLogitsMatchTheCpu) {
  const Tolerance tol = GetParam().tol;
  const std::vector<int32_t> tokens = Prompt(150, vocab_, 1);
  std::vector<float> want;
  auto cs = cpu_->NewState(256);
  ASSERT_TRUE(cs.ok());
  ASSERT_TRUE(cpu_->Prefill(tokens, cs->get(), 64, LogitsMode::kAll, &want).ok());
  // Chunks that exercise the decode-sized kernels (4), the tiled ones (64) and one long pass.
  for (int64_t chunk : {4, 64, 150}) {
    auto gs = gpu_->NewState(256);
    ASSERT_TRUE(gs.ok());
    std::vector<float> got;
    const absl::Status s = gpu_->Prefill(tokens, gs->get(), chunk, LogitsMode::kAll, &got);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_LT(RelDiff(got, want), tol.logits) << "chunk " << chunk;
  }
}

TEST_P(CudaModelTest, GreedyDecodeMatchesTheCpu) {
  const Tolerance tol = GetParam().tol;
  const std::vector<int32_t> prompt = Prompt(40, vocab_, 2);
  auto cs = cpu_->NewState(128);
  auto gs = gpu_->NewState(128);
  ASSERT_TRUE(cs.ok() && gs.ok());
  std::vector<float> cpu_logits, gpu_logits;
  ASSERT_TRUE(cpu_->Prefill(prompt, cs->get(), 16, LogitsMode::kLast, &cpu_logits).ok());
  ASSERT_TRUE(gpu_->Prefill(prompt, gs->get(), 16, LogitsMode::kLast, &gpu_logits).ok());
  EXPECT_LT(RelDiff(gpu_logits, cpu_logits), tol.logits);
  const kernels::SamplingParams greedy{.temperature = 0.0f};
  int exact = 0;
  const int steps = 16;
  // Teacher forcing: both models are fed the CPU's greedy tokens.
  int32_t token = Argmax(cpu_logits);
  for (int step = 0; step < steps; ++step) {
    SequenceState* c_states[] = {cs->get()};
    SequenceState* g_states[] = {gs->get()};
    int32_t cpu_next = -1, gpu_next = -1;
    ASSERT_TRUE(cpu_->DecodeStep(c_states, std::span<const int32_t>(&token, 1), &greedy, &cpu_next,
                                 &cpu_logits)
                    .ok());
    const absl::Status s = gpu_->DecodeStep(g_states, std::span<const int32_t>(&token, 1), &greedy,
                                            &gpu_next, &gpu_logits);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_LT(RelDiff(gpu_logits, cpu_logits), tol.logits) << "step " << step;
    EXPECT_EQ(gpu_next, Argmax(gpu_logits)) << "step " << step;
    if (gpu_next == cpu_next) {
      ++exact;
    } else {
      EXPECT_LE(cpu_logits[cpu_next] - cpu_logits[gpu_next], tol.token_gap) << "step " << step;
    }
    token = cpu_next;
  }
  EXPECT_GE(exact, steps - 2);
}

TEST_P(CudaModelTest, BatchedDecodeMatchesTheCpu) {
  const Tolerance tol = GetParam().tol;
  std::vector<std::unique_ptr<SequenceState>> c_owned, g_owned;
  std::vector<SequenceState*> c_states, g_states;
  for (int i = 0; i < 5; ++i) {
    const std::vector<int32_t> prompt = Prompt(9 + 13 * i, vocab_, 3 + i);
    auto c = cpu_->NewState(128);
    auto g = gpu_->NewState(128);
    ASSERT_TRUE(c.ok() && g.ok());
    ASSERT_TRUE(cpu_->Prefill(prompt, c->get(), 32, LogitsMode::kNone, nullptr).ok());
    ASSERT_TRUE(gpu_->Prefill(prompt, g->get(), 32, LogitsMode::kNone, nullptr).ok());
    c_states.push_back(c->get());
    g_states.push_back(g->get());
    c_owned.push_back(std::move(*c));
    g_owned.push_back(std::move(*g));
  }
  std::vector<int32_t> next = {3, 14, 15, 92, 65};
  for (int step = 0; step < 4; ++step) {
    std::vector<float> want, got;
    ASSERT_TRUE(cpu_->DecodeStep(c_states, next, nullptr, nullptr, &want).ok());
    const absl::Status s = gpu_->DecodeStep(g_states, next, nullptr, nullptr, &got);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_LT(RelDiff(got, want), tol.logits) << "step " << step;
    for (size_t i = 0; i < next.size(); ++i) {
      next[i] = Argmax(std::span<const float>(want).subspan(i * vocab_, vocab_));
    }
  }
}

// Decode steps replayed from CUDA graphs against eager steps on the same device, while the batch
// changes (members, order, size) and prefills in between grow the backend's scratch memory,
// which makes the captured graphs stale and forces new captures.
TEST_P(CudaModelTest, DecodeGraphsMatchEagerSteps) {
  auto eager = HybridModel::Load(dir_, gpu_backend_, {.max_graph_batch = 0});
  ASSERT_TRUE(eager.ok()) << eager.status();
  std::vector<std::unique_ptr<SequenceState>> g_owned, e_owned;
  auto add_sequence = [&](int n, int seed) {
    const std::vector<int32_t> prompt = Prompt(n, vocab_, seed);
    auto g = gpu_->NewState(512);
    auto e = (*eager)->NewState(512);
    ASSERT_TRUE(g.ok() && e.ok());
    ASSERT_TRUE(gpu_->Prefill(prompt, g->get(), 512, LogitsMode::kNone, nullptr).ok());
    ASSERT_TRUE((*eager)->Prefill(prompt, e->get(), 512, LogitsMode::kNone, nullptr).ok());
    g_owned.push_back(std::move(*g));
    e_owned.push_back(std::move(*e));
  };
  for (int i = 0; i < 4; ++i) add_sequence(7 + 11 * i, 20 + i);
  const std::vector<std::vector<int>> batches = {{0, 1, 2}, {0, 1, 2}, {2, 0}, {1, 3, 0},
                                                 {3},       {1, 3, 0}, {3, 1}, {2, 3, 1}};
  const kernels::SamplingParams greedy{.temperature = 0.0f};
  int32_t token = 11;
  for (size_t step = 0; step < 2 * batches.size(); ++step) {
    // Halfway, a long prefill grows the backend's scratch memory: the graphs go stale.
    if (step == batches.size()) add_sequence(400, 30);
    std::vector<SequenceState*> g_batch, e_batch;
    std::vector<int32_t> tokens;
    for (int i : batches[step % batches.size()]) {
      g_batch.push_back(g_owned[i].get());
      e_batch.push_back(e_owned[i].get());
      tokens.push_back(token = static_cast<int32_t>((token * 31 + 7) % vocab_));
    }
    const std::vector<kernels::SamplingParams> params(tokens.size(), greedy);
    std::vector<int32_t> g_ids(tokens.size()), e_ids(tokens.size());
    std::vector<float> g_logits, e_logits;
    const absl::Status gs =
        gpu_->DecodeStep(g_batch, tokens, params.data(), g_ids.data(), &g_logits);
    ASSERT_TRUE(gs.ok()) << gs;
    const absl::Status es =
        (*eager)->DecodeStep(e_batch, tokens, params.data(), e_ids.data(), &e_logits);
    ASSERT_TRUE(es.ok()) << es;
    EXPECT_LT(RelDiff(g_logits, e_logits), 1e-6) << "step " << step;
    EXPECT_EQ(g_ids, e_ids) << "step " << step;
  }
  EXPECT_EQ(gpu_->graphs_captured(), 3);  // sizes 1, 2 and 3 (captured again after going stale)
}

INSTANTIATE_TEST_SUITE_P(Presets, CudaModelTest,
                         ::testing::Values(Case{"tiny", true, {2e-4, 2e-3}},
                                           Case{"tiny", false, {3e-2, 0.1}},
                                           Case{"small", true, {5e-4, 5e-3}},
                                           Case{"small", false, {5e-2, 0.2}}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.preset + (info.param.split_bf16 ? "_split" : "_bf16");
                         });

}  // namespace
}  // namespace ringserve::model
