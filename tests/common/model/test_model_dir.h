#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/model/make_model.h"
#include "gtest/gtest.h"

namespace ringserve::testing {

// A fresh temporary directory, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ringserve-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes the tiny preset with `seed` (and optional changes) into `dir`.
inline void WriteTinyModel(const std::string& dir, uint64_t seed = 7, int shards = 1,
                           int mtp_layers = 0) {
  auto config = model::PresetConfig("tiny");
  ASSERT_TRUE(config.ok()) << config.status();
  config->num_nextn_predict_layers = mtp_layers;
  ASSERT_TRUE(model::WriteRandomCheckpoint(*config, dir, {seed, shards}).ok());
}

// The tiny preset written once per test process (seed 7), for suites that only read it.
inline const std::string& SharedTinyModelDir() {
  static TempDir dir;
  static const bool written = (WriteTinyModel(dir.path()), true);
  (void)written;
  return dir.path();
}

// A deterministic prompt of `n` token ids below 1000.
inline std::vector<int32_t> Prompt(int n, int seed = 1) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + seed * 101 + i * i) % 1000;
  return t;
}

// Max |a - b| relative to the largest |b|.
inline double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double scale = 1e-9, diff = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return diff / scale;
}

}  // namespace ringserve::testing
