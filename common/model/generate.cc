#include "common/model/generate.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::model {

bool IsStopToken(const ModelConfig& config, const GenerateOptions& options, int32_t token) {
  auto has = [token](const auto& ids) {
    return std::find(ids.begin(), ids.end(), token) != ids.end();
  };
  return (!options.ignore_eos && has(config.eos_token_ids)) || has(options.stop_token_ids);
}

absl::StatusOr<std::vector<int32_t>> Generate(HybridModel* model, std::span<const int32_t> prompt,
                                              const GenerateOptions& options,
                                              GenerateStats* stats) {
  if (options.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", options.max_tokens, " must be positive"));
  }
  using Clock = std::chrono::steady_clock;
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  ASSIGN_OR_RETURN(auto state, model->NewState(capacity));
  auto t0 = Clock::now();
  RETURN_IF_ERROR(
      model->Prefill(prompt, state.get(), options.chunk_tokens, LogitsMode::kLast, nullptr));
  kernels::SamplingParams params = options.sampling;
  params.position = static_cast<uint64_t>(prompt.size());
  ASSIGN_OR_RETURN(int32_t token, model->SampleLast(params));
  auto t1 = Clock::now();
  std::vector<int32_t> out = {token};
  SequenceState* states[] = {state.get()};
  while (static_cast<int64_t>(out.size()) < options.max_tokens &&
         !IsStopToken(model->config(), options, token)) {
    params.position = static_cast<uint64_t>(prompt.size() + out.size());
    int32_t next = 0;
    RETURN_IF_ERROR(
        model->DecodeStep(states, std::span<const int32_t>(&token, 1), &params, &next, nullptr));
    token = next;
    out.push_back(token);
  }
  auto t2 = Clock::now();
  if (stats != nullptr) {
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  }
  return out;
}

}  // namespace ringserve::model
