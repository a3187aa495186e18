#include "common/base/safetensors.h"

#include <cstring>
#include <filesystem>
#include <string>

#include "common/base/mapped_file.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::base {
namespace {

using ::ringserve::testing::TempDir;

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json;
}

void ExpectError(const std::string& bytes, absl::StatusCode code, const std::string& fragment) {
  auto parsed = ParseSafetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "f");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), code);
  EXPECT_NE(parsed.status().message().find(fragment), std::string::npos) << parsed.status();
}

TEST(SafetensorsTest, RoundTripsWrittenTensors) {
  TempDir dir;
  const std::string path = dir.path() + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"a", DType::kF32, {2}, std::string(8, '\1')},
                                      {"b", DType::kBF16, {1, 3}, std::string(6, '\2')}})
                  .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 2u);
  const TensorView& b = (*f)->tensors().at("b");
  EXPECT_EQ(b.dtype, DType::kBF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(b.bytes, 6u);
  EXPECT_EQ(b.data[0], 2);
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  ExpectError("abc", absl::StatusCode::kDataLoss, "too short");
  std::string huge(8, '\0');
  const uint64_t n = 200ull << 20;
  std::memcpy(huge.data(), &n, 8);
  ExpectError(huge, absl::StatusCode::kDataLoss, "exceeds the limit");
  ExpectError(Header("{\"a\": {").substr(0, 10), absl::StatusCode::kDataLoss, "runs past the end");
  ExpectError(Header("{not json"), absl::StatusCode::kDataLoss, "not a valid JSON object");
  ExpectError(Header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})"),
              absl::StatusCode::kDataLoss, "lie outside the data section");
  ExpectError(Header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}})") +
                  std::string(8, '\0'),
              absl::StatusCode::kDataLoss, "its shape and dtype need 16");
  ExpectError(Header(R"({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})") + "x",
              absl::StatusCode::kDataLoss, "unsupported dtype 'Q4'");
  ExpectError(Header(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})"),
              absl::StatusCode::kDataLoss, "not a size");
  ExpectError(Header(R"({"a": {"dtype": "F32"}})"), absl::StatusCode::kDataLoss,
              "needs string dtype");
}

TEST(SafetensorsTest, TruncatedFileIsReportedByName) {
  TempDir dir;
  const std::string path = dir.path() + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {1024}, std::string(4096, '\0')}}).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("tensor 'w'"), std::string::npos) << f.status();
  EXPECT_NE(f.status().message().find("truncated"), std::string::npos) << f.status();
}

TEST(TensorStoreTest, ReportsMissingFilesAndShards) {
  TempDir dir;
  auto none = TensorStore::Open(dir.path());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/model.safetensors.index.json",
                                R"({"weight_map": {"a": "model-00001-of-00002.safetensors"}})")
                  .ok());
  auto missing = TensorStore::Open(dir.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing shard"), std::string::npos);
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/model.safetensors.index.json",
                                R"({"weight_map": {"a": "../../etc/passwd"}})")
                  .ok());
  auto escape = TensorStore::Open(dir.path());
  ASSERT_FALSE(escape.ok());
  EXPECT_NE(escape.status().message().find("plain file name"), std::string::npos);
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/model.safetensors.index.json", "[1, 2").ok());
  EXPECT_EQ(TensorStore::Open(dir.path()).status().code(), absl::StatusCode::kDataLoss);
}

TEST(TensorStoreTest, IndexNamingATensorItsShardLacksIsAnError) {
  TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.path() + "/s1.safetensors",
                               {{"a", DType::kF32, {1}, std::string(4, '\0')}})
                  .ok());
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/model.safetensors.index.json",
                                R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})")
                  .ok());
  auto store = TensorStore::Open(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("tensor 'b'"), std::string::npos) << store.status();
}

}  // namespace
}  // namespace ringserve::base
