#include "tests/common/model/reference_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "nlohmann/json.hpp"

namespace ringserve::testing {
namespace {

double FromBf16(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

double RoundBf16(double x) {
  float f = static_cast<float>(x);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&f, &bits, 4);
  return f;
}

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "reference model: " << what << "\n";
  std::abort();
}

using Vec = std::vector<double>;

Vec RmsNorm(const double* x, int64_t n, const double* w, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  Vec y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// y[n] = W[n, k] x[k]
Vec MatVec(const std::vector<double>& w, int64_t rows, int64_t cols, const Vec& x) {
  Vec y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c) acc += w[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }
double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void Rope(double* x, int64_t d, int64_t rd, int64_t pos, double theta) {
  for (int64_t j = 0; j < rd / 2; ++j) {
    const double freq = std::pow(theta, -2.0 * j / rd);
    const double c = std::cos(pos * freq), s = std::sin(pos * freq);
    const double a = x[j], b = x[j + rd / 2];
    x[j] = a * c - b * s;
    x[j + rd / 2] = b * c + a * s;
  }
}

}  // namespace

ReferenceModel::ReferenceModel(const std::string& dir, bool hf_decay) : hf_decay_(hf_decay) {
  std::ifstream cf(dir + "/config.json");
  std::stringstream cs;
  cs << cf.rdbuf();
  auto cj = nlohmann::json::parse(cs.str(), nullptr, false);
  if (cj.is_discarded()) Die("bad config.json");
  for (auto it = cj.begin(); it != cj.end(); ++it) {
    if (it.value().is_number()) config_[it.key()] = it.value().get<double>();
  }
  std::ifstream f(dir + "/model.safetensors", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  uint64_t n;
  std::memcpy(&n, data.data(), 8);
  auto header = nlohmann::json::parse(data.substr(8, n), nullptr, false);
  if (header.is_discarded()) Die("bad safetensors header");
  const char* body = data.data() + 8 + n;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string dtype = it.value()["dtype"];
    const uint64_t b = it.value()["data_offsets"][0], e = it.value()["data_offsets"][1];
    Matrix m;
    if (dtype == "BF16") {
      for (uint64_t o = b; o < e; o += 2) {
        uint16_t v;
        std::memcpy(&v, body + o, 2);
        m.push_back(FromBf16(v));
      }
    } else if (dtype == "F32") {
      for (uint64_t o = b; o < e; o += 4) {
        float v;
        std::memcpy(&v, body + o, 4);
        m.push_back(v);
      }
    } else {
      Die("unexpected dtype " + dtype);
    }
    tensors_[it.key()] = std::move(m);
    shapes_[it.key()] = it.value()["shape"].get<std::vector<int64_t>>();
  }
}

const ReferenceModel::Matrix& ReferenceModel::W(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) Die("missing " + name);
  return it->second;
}

double ReferenceModel::Cfg(const std::string& key) const {
  auto it = config_.find(key);
  if (it == config_.end()) Die("config lacks " + key);
  return it->second;
}

std::vector<std::vector<double>> ReferenceModel::Logits(const std::vector<int>& tokens) const {
  const int64_t T = tokens.size();
  const int64_t hd = Cfg("hidden_size"), L = Cfg("num_hidden_layers"),
                H = Cfg("num_attention_heads"), Hkv = Cfg("num_key_value_heads"),
                D = Cfg("head_dim"), G = Cfg("layer_group_size"), Gn = Cfg("group_norm_size"),
                E = Cfg("num_experts"), K = Cfg("num_experts_per_tok"), ng = Cfg("n_group"),
                tg = Cfg("topk_group"), V = Cfg("vocab_size"),
                dense_layers = Cfg("first_k_dense_replace");
  const double eps = Cfg("rms_norm_eps"), theta = Cfg("rope_theta"),
               scaling = Cfg("routed_scaling_factor");
  const int64_t rd = static_cast<int64_t>(D * Cfg("partial_rotary_factor"));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  std::vector<Vec> x(T);
  for (int64_t t = 0; t < T; ++t) {
    const auto& emb = W("model.word_embeddings.weight");
    x[t] = Vec(emb.begin() + tokens[t] * hd, emb.begin() + (tokens[t] + 1) * hd);
  }
  auto swiglu = [&](const std::string& p, const Vec& b) {
    const auto& g = W(p + "gate_proj.weight");
    const auto& u = W(p + "up_proj.weight");
    const auto& dn = W(p + "down_proj.weight");
    const int64_t inter = shapes_.at(p + "gate_proj.weight")[0];
    Vec gv = MatVec(g, inter, hd, b), uv = MatVec(u, inter, hd, b);
    for (int64_t i = 0; i < inter; ++i) gv[i] = Silu(gv[i]) * uv[i];
    return MatVec(dn, hd, inter, gv);
  };
  for (int64_t li = 0; li < L; ++li) {
    const std::string p = "model.layers." + std::to_string(li) + ".";
    const bool full = (li + 1) % G == 0 || li >= (L / G) * G;
    const int64_t kvh = full ? Hkv : H;
    const auto& qn = W(p + "attention.query_layernorm.weight");
    const auto& kn = W(p + "attention.key_layernorm.weight");
    std::vector<Vec> q(T), k(T), v(T), gate(T), a(T);
    for (int64_t t = 0; t < T; ++t) {
      a[t] = RmsNorm(x[t].data(), hd, W(p + "input_layernorm.weight").data(), eps);
      const Vec qkv =
          MatVec(W(p + "attention.query_key_value.weight"), (H + 2 * kvh) * D, hd, a[t]);
      q[t].assign(qkv.begin(), qkv.begin() + H * D);
      k[t].assign(qkv.begin() + H * D, qkv.begin() + (H + kvh) * D);
      v[t].assign(qkv.begin() + (H + kvh) * D, qkv.end());
      for (int64_t h = 0; h < H; ++h) {
        Vec n = RmsNorm(q[t].data() + h * D, D, qn.data(), eps);
        Rope(n.data(), D, rd, t, theta);
        std::copy(n.begin(), n.end(), q[t].begin() + h * D);
      }
      for (int64_t h = 0; h < kvh; ++h) {
        Vec n = RmsNorm(k[t].data() + h * D, D, kn.data(), eps);
        Rope(n.data(), D, rd, t, theta);
        std::copy(n.begin(), n.end(), k[t].begin() + h * D);
      }
      if (full) {
        for (auto& e : k[t]) e = RoundBf16(e);
        for (auto& e : v[t]) e = RoundBf16(e);
      } else {
        gate[t] = MatVec(W(p + "attention.g_proj.weight"), H * D, hd, a[t]);
      }
    }
    std::vector<Vec> o(T, Vec(H * D, 0.0));
    if (!full) {
      for (int64_t h = 0; h < H; ++h) {
        // Base slopes for a power-of-two H, then the layer factor.
        const double base = std::pow(std::pow(2.0, -8.0 / H), h + 1);
        const double f = hf_decay_ ? 1.0 - (li - 1.0) / (L - 1.0) + 1e-5
                                   : 1.0 - static_cast<double>(li) / (L - 1.0) + 1e-5;
        const double g = -base * f;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t j = 0; j <= t; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < D; ++e) dot += q[t][h * D + e] * k[j][h * D + e];
            const double w = scale * std::exp(g * (t - j)) * dot;
            for (int64_t e = 0; e < D; ++e) o[t][h * D + e] += w * v[j][h * D + e];
          }
        }
      }
      const auto& gw = W(p + "attention.g_norm.weight");
      const int64_t width = H * D / Gn;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t grp = 0; grp < Gn; ++grp) {
          Vec n = RmsNorm(o[t].data() + grp * width, width, gw.data() + grp * width, eps);
          std::copy(n.begin(), n.end(), o[t].begin() + grp * width);
        }
        for (int64_t e = 0; e < H * D; ++e) o[t][e] *= Sigmoid(gate[t][e]);
      }
    } else {
      const int64_t per = H / Hkv;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t h = 0; h < H; ++h) {
          const int64_t kvi = h / per;
          Vec s(t + 1);
          double mx = -1e300;
          for (int64_t j = 0; j <= t; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < D; ++e) dot += q[t][h * D + e] * k[j][kvi * D + e];
            s[j] = dot * scale;
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (auto& e : s) sum += (e = std::exp(e - mx));
          for (int64_t j = 0; j <= t; ++j) {
            for (int64_t e = 0; e < D; ++e) o[t][h * D + e] += s[j] / sum * v[j][kvi * D + e];
          }
        }
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const Vec y = MatVec(W(p + "attention.dense.weight"), hd, H * D, o[t]);
      for (int64_t e = 0; e < hd; ++e) x[t][e] += y[e];
      const Vec b = RmsNorm(x[t].data(), hd, W(p + "post_attention_layernorm.weight").data(), eps);
      Vec ffn;
      if (li < dense_layers) {
        ffn = swiglu(p + "mlp.", b);
      } else {
        const Vec z = MatVec(W(p + "mlp.gate.weight"), E, hd, b);
        const auto& bias = W(p + "mlp.gate.expert_bias");
        Vec prob(E), r(E);
        for (int64_t e = 0; e < E; ++e) {
          prob[e] = Sigmoid(z[e]);
          r[e] = prob[e] + bias[e];
        }
        const int64_t per_group = E / ng;
        std::vector<std::pair<double, int64_t>> groups;
        for (int64_t grp = 0; grp < ng; ++grp) {
          Vec s(r.begin() + grp * per_group, r.begin() + (grp + 1) * per_group);
          std::sort(s.rbegin(), s.rend());
          groups.push_back({-(s[0] + s[1]), grp});
        }
        std::sort(groups.begin(), groups.end());
        std::vector<std::pair<double, int64_t>> cand;
        for (int64_t gi = 0; gi < tg; ++gi) {
          for (int64_t e = groups[gi].second * per_group; e < (groups[gi].second + 1) * per_group;
               ++e) {
            cand.push_back({-r[e], e});
          }
        }
        std::sort(cand.begin(), cand.end());
        double psum = 0;
        for (int64_t i = 0; i < K; ++i) psum += prob[cand[i].second];
        ffn.assign(hd, 0.0);
        for (int64_t i = 0; i < K; ++i) {
          const int64_t e = cand[i].second;
          const double w = prob[e] / (psum + 1e-20) * scaling;
          const Vec y = swiglu(p + "mlp.experts." + std::to_string(e) + ".", b);
          for (int64_t c = 0; c < hd; ++c) ffn[c] += w * y[c];
        }
        const Vec shared = swiglu(p + "mlp.shared_experts.", b);
        for (int64_t c = 0; c < hd; ++c) ffn[c] += shared[c];
      }
      for (int64_t e = 0; e < hd; ++e) x[t][e] += ffn[e];
    }
  }
  std::vector<std::vector<double>> logits(T);
  for (int64_t t = 0; t < T; ++t) {
    const Vec h = RmsNorm(x[t].data(), hd, W("model.norm.weight").data(), eps);
    logits[t] = MatVec(W("lm_head.weight"), V, hd, h);
  }
  return logits;
}

}  // namespace ringserve::testing
