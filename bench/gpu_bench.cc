// ringserve-gpu-bench: the CUDA backend against limits measured in the same run.
//  - limits: device-to-device copy bandwidth (the HBM roofline) and the cuBLAS bf16 GEMM peak;
//  - decode tokens/s at batch 1 and 64, replaying CUDA graphs and eagerly, beside the roofline
//    of the bytes one step must move (weights, expected distinct experts, linear states, KV
//    cache, logits), from the shapes;
//  - prefill TFLOP/s at 4K and 32K tokens (model FLOPs from the shapes) beside the GEMM peak;
//  - our linear-attention prefill kernel against our softmax attention kernel at 4K/32K/128K.
// Models: the `small` preset and a random model with Ring-mini-linear-2.0's shapes, reduced to
// --mini_layers layers (default 5: one hybrid group, 4 linear + 1 softmax) so that writing and
// loading its checkpoint fits the time budget. --json prints one JSON object.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "common/model/make_model.h"
#include "common/model/model.h"
#include "kernels/cuda/cuda_backend.h"
#include "nlohmann/json.hpp"

namespace ringserve {
namespace {

using Json = nlohmann::ordered_json;
using model::ModelConfig;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

ModelConfig MiniConfig(int64_t layers) {
  ModelConfig c;
  c.hidden_size = 2048;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  c.head_dim = 128;
  c.layer_group_size = 5;
  c.group_norm_size = 4;
  c.intermediate_size = 5120;
  c.moe_intermediate_size = 512;
  c.moe_shared_expert_intermediate_size = 512;
  c.num_experts = 256;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.num_shared_experts = 1;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 1;
  c.rope_theta = 1e6;
  c.partial_rotary_factor = 0.5;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-6;
  c.vocab_size = 157184;
  c.eos_token_ids = {156892};
  return c;
}

// Parameters of layer `i` read for one token, without the routed experts.
struct LayerShape {
  double attention = 0;  // in_proj + dense
  double mlp = 0;        // dense MLP, or router + shared experts
  double expert = 0;     // one routed expert
};

LayerShape Shape(const ModelConfig& c, int64_t i) {
  const double hd = static_cast<double>(c.hidden_size);
  const double inner = static_cast<double>(c.num_attention_heads * c.head_dim);
  LayerShape s;
  s.attention = (c.IsSoftmaxLayer(i) ? static_cast<double>(c.softmax_qkv_rows()) : 4 * inner) * hd +
                hd * inner;
  if (c.IsMoeLayer(i)) {
    s.mlp = static_cast<double>(c.num_experts) * hd + 3.0 * c.shared_intermediate() * hd;
    s.expert = 3.0 * c.moe_intermediate_size * hd;
  } else {
    s.mlp = 3.0 * c.intermediate_size * hd;
  }
  return s;
}

// Expected distinct experts when `tokens` tokens each pick k of E uniformly.
double ExpectedExperts(const ModelConfig& c, int64_t tokens) {
  const double e = static_cast<double>(c.num_experts);
  return e * (1.0 - std::pow(1.0 - static_cast<double>(c.num_experts_per_tok) / e, tokens));
}

// Bytes one decode step of `batch` sequences at context `context` must move at least.
double DecodeBytes(const ModelConfig& c, int64_t batch, int64_t context) {
  double bytes = 0;
  const double b = static_cast<double>(batch);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerShape s = Shape(c, i);
    double params = s.attention + s.mlp;
    if (c.IsMoeLayer(i)) params += ExpectedExperts(c, batch) * s.expert;
    bytes += 2.0 * params;  // bf16 weights
    if (c.IsSoftmaxLayer(i)) {
      bytes += b * 2.0 * 2.0 * c.num_key_value_heads * c.head_dim * (context + 1.0);  // K, V
    } else {
      bytes += b * 2.0 * 4.0 * c.num_attention_heads * c.head_dim * c.head_dim;  // state r/w
    }
  }
  bytes += 2.0 * static_cast<double>(c.vocab_size) * c.hidden_size;  // lm_head
  bytes += b * 2.0 * 4.0 * static_cast<double>(c.vocab_size);        // logits written, read
  return bytes;
}

// Model FLOPs of a prefill of T tokens from position 0 (logits of the last token only).
double PrefillFlops(const ModelConfig& c, int64_t tokens) {
  const double t = static_cast<double>(tokens);
  const double d = static_cast<double>(c.head_dim);
  const double h = static_cast<double>(c.num_attention_heads);
  double flops = 2.0 * static_cast<double>(c.vocab_size) * c.hidden_size;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerShape s = Shape(c, i);
    flops += 2.0 * t * (s.attention + s.mlp + c.num_experts_per_tok * s.expert);
    if (c.IsSoftmaxLayer(i)) {
      flops += 2.0 * d * h * t * (t + 1.0);  // causal QK^T and PV
    } else {
      flops += t * h * (4.0 * d * d + 2.0 * 64.0 * d);  // q S, state update, causal chunk terms
    }
  }
  return flops;
}

double ParamCount(const ModelConfig& c) {
  double n = 2.0 * static_cast<double>(c.vocab_size) * c.hidden_size;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerShape s = Shape(c, i);
    n += s.attention + s.mlp + (c.IsMoeLayer(i) ? c.num_experts * s.expert : 0.0);
  }
  return n;
}

std::vector<int32_t> Tokens(int64_t n, int64_t vocab, int64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((i * 7919 + seed * 104729) % (vocab - 1));
  return t;
}

class Bench {
 public:
  Bench(kernels::CudaBackend* backend, bool quiet) : be_(backend), quiet_(quiet) {}

  void Say(const std::string& line) {
    if (!quiet_) std::cout << line << std::endl;
  }

  absl::Status Limits(Json* out) {
    ASSIGN_OR_RETURN(copy_bw_, be_->MeasureCopyBandwidth(size_t{1} << 30, 20));
    gemm_peak_ = 0;
    for (int64_t n : {4096, 8192}) {
      ASSIGN_OR_RETURN(double f, be_->MeasureBf16GemmFlops(n, n, n, 10));
      gemm_peak_ = std::max(gemm_peak_, f);
    }
    (*out)["copy_bandwidth_gb_per_s"] = copy_bw_ / 1e9;
    (*out)["bf16_gemm_tflops"] = gemm_peak_ / 1e12;
    Say(absl::StrFormat(
        "limits: copy bandwidth %.0f GB/s (read + write), cuBLAS bf16 GEMM %.0f TFLOP/s",
        copy_bw_ / 1e9, gemm_peak_ / 1e12));
    return absl::OkStatus();
  }

  absl::Status Model(const std::string& name, const ModelConfig& config, const std::string& dir,
                     int64_t decode_steps, int64_t chunk, Json* out) {
    auto t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(model::WriteRandomCheckpoint(config, dir, {1}));
    const double write_s = Seconds(t0);
    t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(std::unique_ptr<model::HybridModel> m, model::HybridModel::Load(dir, be_, {}));
    RETURN_IF_ERROR(be_->Synchronize());
    const double load_s = Seconds(t0);
    std::filesystem::remove_all(dir);
    (*out)["name"] = name;
    (*out)["layers"] = config.num_hidden_layers;
    (*out)["params"] = ParamCount(config);
    (*out)["checkpoint_write_s"] = write_s;
    (*out)["load_s"] = load_s;
    Say(absl::StrFormat("model %s: %d layers, %.2fB params (write %.1fs, load %.1fs)", name,
                        config.num_hidden_layers, ParamCount(config) / 1e9, write_s, load_s));

    const int64_t vocab = config.vocab_size;
    const int64_t prompt = 128;
    Json decode = Json::array();
    // Each batch size with CUDA graphs (the default) and eagerly (--enforce-eager).
    for (int64_t batch : {1, 64}) {
      for (bool graphs : {true, false}) {
        m->set_max_graph_batch(graphs ? batch : 0);
        std::vector<std::unique_ptr<model::SequenceState>> owned;
        std::vector<model::SequenceState*> states;
        for (int64_t b = 0; b < batch; ++b) {
          ASSIGN_OR_RETURN(auto s, m->NewState(prompt + decode_steps + 8));
          RETURN_IF_ERROR(m->Prefill(Tokens(prompt, vocab, b), s.get(), prompt,
                                     model::LogitsMode::kNone, nullptr));
          states.push_back(s.get());
          owned.push_back(std::move(s));
        }
        std::vector<int32_t> tokens(batch, 1);
        std::vector<int32_t> sampled(batch);
        std::vector<kernels::SamplingParams> params(batch,
                                                    kernels::SamplingParams{.temperature = 0.0f});
        const int64_t warmup = 3;  // the first step of a batch size also captures its graph
        double seconds = 0;
        for (int64_t step = 0; step < warmup + decode_steps; ++step) {
          t0 = std::chrono::steady_clock::now();
          RETURN_IF_ERROR(m->DecodeStep(states, tokens, params.data(), sampled.data(), nullptr));
          if (step >= warmup) seconds += Seconds(t0);
          tokens = sampled;
        }
        if (graphs && m->graphs_captured() != 1) {
          return absl::InternalError(absl::StrCat("decode batch ", batch, " captured ",
                                                  m->graphs_captured(), " graphs, expected 1"));
        }
        const double tps = static_cast<double>(batch * decode_steps) / seconds;
        const int64_t context = prompt + warmup + decode_steps / 2;
        const double bytes = DecodeBytes(config, batch, context);
        const double roof = static_cast<double>(batch) * copy_bw_ / bytes;
        decode.push_back({{"batch", batch},
                          {"cuda_graphs", graphs},
                          {"context", context},
                          {"tokens_per_s", tps},
                          {"step_ms", 1e3 * seconds / decode_steps},
                          {"bytes_per_step", bytes},
                          {"roofline_tokens_per_s", roof},
                          {"fraction_of_roofline", tps / roof}});
        Say(absl::StrFormat(
            "  decode batch %3d (%s): %8.0f tok/s (%.2f ms/step); roofline %8.0f tok/s "
            "(%.0f MB/step) -> %.0f%%",
            batch, graphs ? "graphs" : "eager ", tps, 1e3 * seconds / decode_steps, roof,
            bytes / 1e6, 100 * tps / roof));
      }
    }
    m->set_max_graph_batch(model::ModelOptions().max_graph_batch);
    (*out)["decode"] = decode;

    Json prefill = Json::array();
    bool warmed = false;
    for (int64_t tokens : {4096, 32768}) {
      const std::vector<int32_t> ids = Tokens(tokens, vocab, 99);
      const int64_t chunk_len = std::min(chunk, tokens);
      if (!warmed) {
        ASSIGN_OR_RETURN(auto warm, m->NewState(tokens));
        RETURN_IF_ERROR(m->Prefill(ids, warm.get(), chunk_len, model::LogitsMode::kLast, nullptr));
        warmed = true;
      }
      ASSIGN_OR_RETURN(auto s, m->NewState(tokens));
      t0 = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(m->Prefill(ids, s.get(), chunk_len, model::LogitsMode::kLast, nullptr));
      const double seconds = Seconds(t0);
      const double flops = PrefillFlops(config, tokens);
      prefill.push_back({{"tokens", tokens},
                         {"chunk", chunk_len},
                         {"seconds", seconds},
                         {"tokens_per_s", tokens / seconds},
                         {"model_tflops", flops / 1e12},
                         {"tflops_per_s", flops / seconds / 1e12},
                         {"fraction_of_gemm_peak", flops / seconds / gemm_peak_}});
      Say(
          absl::StrFormat("  prefill %6d tokens (chunk %d): %.3f s, %8.0f tok/s, %6.1f TFLOP/s "
                          "= %.0f%% of the bf16 GEMM peak",
                          tokens, chunk_len, seconds, tokens / seconds, flops / seconds / 1e12,
                          100 * flops / seconds / gemm_peak_));
    }
    (*out)["prefill"] = prefill;
    return be_->Synchronize();
  }

  // One linear-attention prefill and one softmax-attention prefill of T tokens, Ring-mini shapes.
  absl::Status Attention(int64_t tokens, Json* out) {
    const ModelConfig c = MiniConfig(5);
    const int64_t h = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
    const int64_t inner = h * d;
    const int64_t lin_ld = 3 * inner;
    const int64_t soft_ld = (h + 2 * hkv) * d;
    const size_t in_floats = static_cast<size_t>(tokens * std::max(lin_ld, soft_ld));
    ASSIGN_OR_RETURN(kernels::Buffer in, be_->Allocate(in_floats * sizeof(float)));
    ASSIGN_OR_RETURN(kernels::Buffer o,
                     be_->Allocate(static_cast<size_t>(tokens * inner) * sizeof(float)));
    ASSIGN_OR_RETURN(kernels::Buffer state,
                     be_->Allocate(static_cast<size_t>(h * d * d) * sizeof(float)));
    ASSIGN_OR_RETURN(kernels::Buffer decay, be_->Allocate(static_cast<size_t>(h) * sizeof(float)));
    const size_t cache_elems = static_cast<size_t>(hkv * tokens * d);
    ASSIGN_OR_RETURN(kernels::Buffer kc, be_->Allocate(cache_elems * sizeof(uint16_t)));
    ASSIGN_OR_RETURN(kernels::Buffer vc, be_->Allocate(cache_elems * sizeof(uint16_t)));
    // Random inputs: one 16M-float block, tiled.
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> block(std::min<size_t>(in_floats, size_t{1} << 24));
    for (float& x : block) x = u(rng);
    float* inp = static_cast<float*>(in.get());
    for (size_t at = 0; at < in_floats; at += block.size()) {
      be_->CopyToDevice(inp + at, block.data(),
                        std::min(block.size(), in_floats - at) * sizeof(float));
    }
    const std::vector<float> g = c.LogDecay(2, model::DecayVariant::kSglang);
    be_->CopyToDevice(decay.get(), g.data(), g.size() * sizeof(float));
    RETURN_IF_ERROR(be_->Synchronize());
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));

    auto run_linear = [&] {
      be_->Fill(static_cast<float*>(state.get()), 0.0f, h * d * d);
      be_->LinearAttention({inp, inp + inner, inp + 2 * inner, lin_ld, static_cast<float*>(o.get()),
                            static_cast<float*>(state.get()),
                            static_cast<const float*>(decay.get()), tokens, h, d, scale});
      return be_->Synchronize();
    };
    auto run_softmax = [&] {
      be_->SoftmaxAttention({inp, inp + inner, inp + (h + hkv) * d, soft_ld,
                             static_cast<float*>(o.get()), static_cast<uint16_t*>(kc.get()),
                             static_cast<uint16_t*>(vc.get()), tokens, 0, tokens, h, hkv, d,
                             scale});
      return be_->Synchronize();
    };
    RETURN_IF_ERROR(run_linear());  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(run_linear());
    const double linear_s = Seconds(t0);
    if (tokens <= 4096) RETURN_IF_ERROR(run_softmax());  // warm-up
    t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(run_softmax());
    const double softmax_s = Seconds(t0);
    const double t = static_cast<double>(tokens);
    const double softmax_flops = 2.0 * d * h * t * (t + 1.0);
    const double linear_flops = t * h * (4.0 * d * d + 2.0 * 64.0 * d);
    *out = {{"tokens", tokens},
            {"linear_ms", 1e3 * linear_s},
            {"linear_tflops_per_s", linear_flops / linear_s / 1e12},
            {"softmax_ms", 1e3 * softmax_s},
            {"softmax_tflops_per_s", softmax_flops / softmax_s / 1e12},
            {"softmax_over_linear", softmax_s / linear_s}};
    Say(absl::StrFormat(
        "  attention %6d tokens (H %d, Hkv %d, D %d): linear %9.2f ms (%5.1f TFLOP/s), "
        "softmax %9.2f ms (%5.1f TFLOP/s): softmax/linear %.1fx",
        tokens, h, hkv, d, 1e3 * linear_s, linear_flops / linear_s / 1e12, 1e3 * softmax_s,
        softmax_flops / softmax_s / 1e12, softmax_s / linear_s));
    return absl::OkStatus();
  }

 private:
  kernels::CudaBackend* be_;
  bool quiet_;
  double copy_bw_ = 0;
  double gemm_peak_ = 0;
};

absl::Status Run(const std::vector<std::string>& args) {
  base::FlagSet flags("ringserve-gpu-bench");
  flags.Bool("json", false, "print one JSON object instead of the table");
  flags.String("models", "small,mini",
               "models to run: small (preset) and/or mini (Ring-mini shapes)");
  flags.String("mini_layers", "5", "layers of the Ring-mini-shaped model (20 = the full model)");
  flags.String("decode_steps", "32", "timed decode steps per batch size");
  flags.String("chunk", "8192", "prefill chunk length");
  flags.String("attention_tokens", "4096,32768,131072",
               "sequence lengths of the attention kernels");
  flags.String("workdir", std::filesystem::temp_directory_path().string(),
               "where the random checkpoints are written (and removed)");
  flags.Bool("split_bf16", false, "run the backend in split-bf16 mode");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const int64_t mini_layers, flags.GetInt("mini_layers"));
  ASSIGN_OR_RETURN(const int64_t decode_steps, flags.GetInt("decode_steps"));
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk"));
  ASSIGN_OR_RETURN(const std::vector<int64_t> attention_tokens,
                   flags.GetIntList("attention_tokens"));
  if (mini_layers < 1 || decode_steps < 1 || chunk < 1) {
    return absl::InvalidArgumentError("mini_layers, decode_steps and chunk must be positive");
  }
  const bool json = flags.GetBool("json");

  kernels::CudaBackendOptions options;
  options.split_bf16 = flags.GetBool("split_bf16");
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::CudaBackend> backend,
                   kernels::CudaBackend::Create(options));
  const kernels::CudaDeviceInfo& info = backend->info();
  Json result;
  result["device"] = {{"name", info.name},
                      {"sms", info.sm_count},
                      {"memory_bytes", info.memory_bytes},
                      {"grouped_gemm", info.grouped_gemm},
                      {"split_bf16", options.split_bf16}};
  Bench bench(backend.get(), json);
  bench.Say(absl::StrFormat(
      "device: %s, %d SMs, %.0f GiB; MoE grouped GEMM: %s", info.name, info.sm_count,
      info.memory_bytes / double(1ull << 30),
      info.grouped_gemm ? "cublasGemmGroupedBatchedEx" : "per-expert cublasGemmEx"));
  Json limits;
  RETURN_IF_ERROR(bench.Limits(&limits));
  result["limits"] = limits;

  Json models = Json::array();
  const std::string which = flags.Get("models");
  for (const std::string name : {"small", "mini"}) {
    if (which.find(name) == std::string::npos) continue;
    ModelConfig config;
    if (name == "small") {
      ASSIGN_OR_RETURN(config, model::PresetConfig("small"));
    } else {
      config = MiniConfig(mini_layers);
    }
    const std::string dir = (std::filesystem::path(flags.Get("workdir")) /
                             absl::StrCat("ringserve-gpu-bench-", name, "-", ::getpid()))
                                .string();
    Json m;
    const absl::Status s = bench.Model(
        name == "mini" ? absl::StrCat("ring-mini-shaped-", mini_layers, "-layers") : name, config,
        dir, decode_steps, chunk, &m);
    std::filesystem::remove_all(dir);
    RETURN_IF_ERROR(s);
    models.push_back(m);
  }
  result["models"] = models;

  Json attention = Json::array();
  for (int64_t tokens : attention_tokens) {
    Json a;
    RETURN_IF_ERROR(bench.Attention(tokens, &a));
    attention.push_back(a);
  }
  result["attention"] = attention;
  if (json) std::cout << result.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace ringserve

int main(int argc, char** argv) {
  const absl::Status s = ringserve::Run(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok()) {
    std::cerr << "ringserve-gpu-bench: " << s << std::endl;
    return 1;
  }
  return 0;
}
