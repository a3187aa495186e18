// Prefix checkpoints: a prompt restored from a checkpoint of an earlier prompt and prefilled from
// there gives the cold prefill's logits (bit for bit at a chunk boundary).
#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::model {
namespace {

using ::ringserve::testing::Prompt;
using ::ringserve::testing::RelDiff;

constexpr int64_t kChunk = 16;

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The checkpoints the prefill worker takes of one prompt: at every chunk boundary and at the
// end, the linear states, plus the KV of each chunk.
struct Checkpoints {
  std::vector<int32_t> prompt;
  std::map<int64_t, kernels::Buffer> states;  // by position
  std::vector<kernels::Buffer> kv;            // one per chunk
  std::vector<HybridModel::SavedKv> pieces;
};

class PrefixCheckpointTest : public ::testing::TestWithParam<DecayVariant> {
 protected:
  void SetUp() override {
    backend_ = std::make_unique<kernels::CpuBackend>(2);
    auto m =
        HybridModel::Load(ringserve::testing::SharedTinyModelDir(), backend_.get(), {GetParam()});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }

  // Logits of every token of a cold prefill in chunks of kChunk.
  std::vector<float> Cold(const std::vector<int32_t>& tokens) {
    auto state = model_->NewState(static_cast<int64_t>(tokens.size()));
    EXPECT_TRUE(state.ok());
    std::vector<float> logits;
    EXPECT_TRUE(model_->Prefill(tokens, state->get(), kChunk, LogitsMode::kAll, &logits).ok());
    return logits;
  }

  Checkpoints Save(const std::vector<int32_t>& prompt) {
    Checkpoints c;
    c.prompt = prompt;
    auto state = model_->NewState(static_cast<int64_t>(prompt.size()));
    EXPECT_TRUE(state.ok());
    SequenceState& s = **state;
    for (size_t begin = 0; begin < prompt.size(); begin += kChunk) {
      const size_t n = std::min<size_t>(kChunk, prompt.size() - begin);
      EXPECT_TRUE(model_
                      ->Prefill(std::span<const int32_t>(prompt).subspan(begin, n), &s, kChunk,
                                LogitsMode::kNone, nullptr)
                      .ok());
      auto linear = model_->SaveLinearStates(s);
      auto kv = model_->SaveKv(s, static_cast<int64_t>(begin), s.position());
      EXPECT_TRUE(linear.ok() && kv.ok());
      c.states.emplace(s.position(), std::move(*linear));
      c.pieces.push_back({kv->get(), static_cast<int64_t>(begin), s.position()});
      c.kv.push_back(std::move(*kv));
    }
    return c;
  }

  // Restores the longest checkpoint of `c` usable for `tokens` (a shared prefix, leaving at least
  // one token to compute), prefills the rest in chunks of kChunk, and returns the logits of the
  // tokens computed; `restored` gets the checkpoint's position.
  std::vector<float> Warm(const Checkpoints& c, const std::vector<int32_t>& tokens,
                          int64_t* restored) {
    const auto diverge = std::mismatch(c.prompt.begin(), c.prompt.end(), tokens.begin(),
                                       tokens.begin() + std::min(c.prompt.size(), tokens.size()));
    const int64_t shared = diverge.first - c.prompt.begin();
    const int64_t limit = std::min<int64_t>(shared, static_cast<int64_t>(tokens.size()) - 1);
    auto it = c.states.upper_bound(limit);
    EXPECT_NE(it, c.states.begin());
    --it;
    *restored = it->first;
    std::vector<HybridModel::SavedKv> pieces;
    for (const auto& p : c.pieces) {
      if (p.end <= *restored) pieces.push_back(p);
    }
    auto state = model_->NewState(static_cast<int64_t>(tokens.size()));
    EXPECT_TRUE(state.ok());
    EXPECT_TRUE(model_->Restore(it->second.get(), pieces, *restored, state->get()).ok());
    std::vector<float> logits;
    EXPECT_TRUE(model_
                    ->Prefill(std::span<const int32_t>(tokens).subspan(*restored), state->get(),
                              kChunk, LogitsMode::kAll, &logits)
                    .ok());
    return logits;
  }

  // The cold logits of the tokens from `from` on.
  std::vector<float> ColdFrom(const std::vector<int32_t>& tokens, int64_t from) {
    const std::vector<float> all = Cold(tokens);
    return std::vector<float>(all.begin() + from * model_->config().vocab_size, all.end());
  }

  std::unique_ptr<kernels::CpuBackend> backend_;
  std::unique_ptr<HybridModel> model_;
};

TEST_P(PrefixCheckpointTest, RestoreAtAChunkBoundaryIsBitIdentical) {
  const Checkpoints saved = Save(Prompt(70, 1));  // checkpoints at 16, 32, 48, 64 and 70
  const std::vector<int32_t> a = saved.prompt;
  struct Case {
    const char* name;
    std::vector<int32_t> tokens;
    int64_t restored;
  };
  const std::vector<Case> cases = {
      {"ends exactly at a checkpoint", {a.begin(), a.begin() + 48}, 32},
      {"ends before a checkpoint", {a.begin(), a.begin() + 45}, 32},
      {"goes on after a checkpoint", Concat({a.begin(), a.begin() + 48}, Prompt(21, 2)), 48},
      {"diverges inside a chunk", Concat({a.begin(), a.begin() + 40}, Prompt(9, 3)), 32},
      {"repeats the prompt", a, 64},
  };
  for (const Case& c : cases) {
    int64_t restored = 0;
    const std::vector<float> warm = Warm(saved, c.tokens, &restored);
    EXPECT_EQ(restored, c.restored) << c.name;
    ASSERT_FALSE(warm.empty()) << c.name;
    EXPECT_TRUE(warm == ColdFrom(c.tokens, restored)) << c.name;
  }
}

TEST_P(PrefixCheckpointTest, RestoreAtThePromptEndIsWithinTolerance) {
  const Checkpoints saved = Save(Prompt(70, 1));
  const std::vector<int32_t> longer = Concat(saved.prompt, Prompt(30, 4));
  int64_t restored = 0;
  const std::vector<float> warm = Warm(saved, longer, &restored);
  EXPECT_EQ(restored, 70);
  EXPECT_LT(RelDiff(warm, ColdFrom(longer, restored)), 1e-5);
}

TEST_P(PrefixCheckpointTest, RestoreRejectsKvThatDoesNotCoverThePrefix) {
  const Checkpoints saved = Save(Prompt(40, 1));
  auto state = model_->NewState(64);
  ASSERT_TRUE(state.ok());
  const kernels::Buffer& at32 = saved.states.at(32);
  std::vector<HybridModel::SavedKv> gap = {saved.pieces[0]};
  EXPECT_FALSE(model_->Restore(at32.get(), gap, 32, state->get()).ok());
  std::vector<HybridModel::SavedKv> skip = {saved.pieces[1]};
  EXPECT_FALSE(model_->Restore(at32.get(), skip, 32, state->get()).ok());
  EXPECT_FALSE(model_->SaveKv(**state, 0, 1).ok());  // nothing prefilled yet
}

INSTANTIATE_TEST_SUITE_P(DecayVariants, PrefixCheckpointTest,
                         ::testing::Values(DecayVariant::kSglang, DecayVariant::kHf),
                         [](const auto& info) {
                           return std::string(DecayVariantName(info.param));
                         });

}  // namespace
}  // namespace ringserve::model
