#pragma once

#include <filesystem>
#include <string>

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

}  // namespace ringserve::testing
