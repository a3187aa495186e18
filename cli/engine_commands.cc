// ringctl commands that run the engine in this process: make-model, logits, generate --offline.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/token_ids.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "common/model/make_model.h"
#include "common/model/model.h"
#include "kernels/backend.h"

namespace ringserve::cli {
namespace {

absl::Status MakeModel(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl make-model");
  flags.String("preset", "tiny", "tiny, small, tiny-softmax or small-softmax");
  flags.String("out", "", "output directory");
  flags.String("seed", "0", "random seed of the weights");
  flags.String("shards", "1", "number of safetensors shards");
  RETURN_IF_ERROR(flags.Parse(args));
  if (flags.Get("out").empty()) return absl::InvalidArgumentError("--out is required");
  ASSIGN_OR_RETURN(model::ModelConfig config, model::PresetConfig(flags.Get("preset")));
  ASSIGN_OR_RETURN(const int64_t seed, flags.GetInt("seed"));
  ASSIGN_OR_RETURN(const int64_t shards, flags.GetInt("shards"));
  RETURN_IF_ERROR(WriteDefaultModel(config, flags.Get("out"), static_cast<uint64_t>(seed),
                                    static_cast<int>(shards)));
  std::printf("wrote %s model to %s\n", flags.Get("preset").c_str(), flags.Get("out").c_str());
  return absl::OkStatus();
}

absl::Status Logits(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl logits");
  AddEngineFlags(&flags);
  AddTokenIdFlags(&flags, "tokens");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, TokenIds(flags, "tokens"));
  ASSIGN_OR_RETURN(Engine engine, LoadEngine(flags));
  std::vector<int32_t> tokens(ids.begin(), ids.end());
  ASSIGN_OR_RETURN(auto state, engine.model->NewState(std::max<int64_t>(1, tokens.size())));
  std::vector<float> logits;
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk-tokens"));
  RETURN_IF_ERROR(
      engine.model->Prefill(tokens, state.get(), chunk, model::LogitsMode::kAll, &logits));
  const int64_t vocab = engine.model->config().vocab_size;
  std::string out = "{\"logits\": [";
  char buf[32];
  for (size_t t = 0; t < tokens.size(); ++t) {
    out += t == 0 ? "[" : ", [";
    for (int64_t i = 0; i < vocab; ++i) {
      std::snprintf(buf, sizeof(buf), i == 0 ? "%.9g" : ", %.9g", logits[t * vocab + i]);
      out += buf;
    }
    out += "]";
  }
  out += "]}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return absl::OkStatus();
}

absl::Status GenerateOffline(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl generate --offline");
  AddEngineFlags(&flags);
  flags.Bool("offline", false, "run the engine in this process");
  AddTokenIdFlags(&flags, "prompt-tokens");
  flags.String("max-tokens", "16", "tokens to generate");
  flags.Bool("ignore-eos", false, "do not stop at the model's eos ids");
  AddSamplingFlags(&flags);
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, TokenIds(flags, "prompt-tokens"));
  ASSIGN_OR_RETURN(const int64_t max_tokens, flags.GetInt("max-tokens"));
  ASSIGN_OR_RETURN(kernels::SamplingParams sampling, ParseSampling(flags));
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk-tokens"));
  ASSIGN_OR_RETURN(Engine engine, LoadEngine(flags));
  std::vector<int32_t> prompt(ids.begin(), ids.end());
  ASSIGN_OR_RETURN(std::vector<int32_t> out,
                   GenerateTokens(engine.model.get(), prompt, max_tokens, sampling, chunk,
                                  flags.GetBool("ignore-eos"), &std::cerr));
  std::printf("{\"ids\": [%s]}\n", absl::StrJoin(out, ", ").c_str());
  return absl::OkStatus();
}

}  // namespace

int RunMakeModel(const std::vector<std::string>& args) { return Report(MakeModel(args)); }
int RunLogits(const std::vector<std::string>& args) { return Report(Logits(args)); }

int RunGenerate(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--offline" || a == "--offline=true") return Report(GenerateOffline(args));
  }
  return RunGenerateRemote(args);
}

}  // namespace ringserve::cli
