#include "common/state/wire.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ringserve::state {
namespace {

using internal::v1::StateMessage;
using ::testing::HasSubstr;

// `bytes` cut into slices of `size` bytes (the last may be shorter).
std::vector<grpc::Slice> Slices(const std::string& bytes, size_t size) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += size) {
    slices.emplace_back(bytes.substr(at, size));
  }
  return slices;
}

std::string Joined(const std::vector<std::span<const uint8_t>>& pieces) {
  std::string out;
  for (const auto& p : pieces) out.append(reinterpret_cast<const char*>(p.data()), p.size());
  return out;
}

TEST(WireTest, EncodedPieceIsAProtobufStateMessage) {
  const std::string a = "first chunk ", b(300, 'x');
  Piece piece;
  piece.segment = 300;
  piece.offset = 1ull << 40;
  piece.chunks = {{reinterpret_cast<const uint8_t*>(a.data()), a.size()},
                  {reinterpret_cast<const uint8_t*>(b.data()), b.size()}};
  piece.size = a.size() + b.size();
  for (std::optional<uint64_t> checksum :
       {std::optional<uint64_t>(), std::optional<uint64_t>(~0ull)}) {
    piece.checksum = checksum;
    std::string encoded(EncodedPieceSize(piece), '\0');
    EncodePiece(piece, reinterpret_cast<uint8_t*>(encoded.data()));
    StateMessage message;
    ASSERT_TRUE(message.ParseFromString(encoded));
    ASSERT_TRUE(message.has_data());
    EXPECT_EQ(message.data().segment(), 300u);
    EXPECT_EQ(message.data().offset(), 1ull << 40);
    EXPECT_EQ(message.data().bytes(), a + b);
    EXPECT_EQ(message.data().has_checksum(), checksum.has_value());
    if (checksum.has_value()) {
      EXPECT_EQ(message.data().checksum(), *checksum);
    }
  }
}

TEST(WireTest, DecodesProtobufBytesAcrossAnySlicing) {
  StateMessage message;
  message.mutable_data()->set_segment(7);
  message.mutable_data()->set_offset(123456789);
  message.mutable_data()->set_bytes(std::string(5000, 'q') + "end");
  message.mutable_data()->set_checksum(0xfeedface12345678ull);
  const std::string encoded = message.SerializeAsString();
  for (size_t size : {1, 2, 3, 7, 64, 4096, 100000}) {
    const std::vector<grpc::Slice> slices = Slices(encoded, size);
    auto decoded = DecodeStateMessage(slices);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_FALSE(decoded->manifest.has_value());
    EXPECT_EQ(decoded->segment, 7u);
    EXPECT_EQ(decoded->offset, 123456789u);
    EXPECT_EQ(Joined(decoded->bytes), message.data().bytes());
    EXPECT_EQ(decoded->checksum, 0xfeedface12345678ull);
  }
}

TEST(WireTest, DecodesManifestsAndSkipsUnknownFields) {
  StateMessage message;
  message.mutable_manifest()->set_request_id("r");
  message.mutable_manifest()->add_segments()->set_bytes(99);
  // Field 9 (varint), field 10 (fixed64), field 11 (bytes), field 12 (fixed32): unknown.
  const std::string unknown = std::string("\x48\x05", 2) + std::string("\x51", 1) +
                              std::string(8, '\x01') + std::string("\x5a\x02zz", 4) +
                              std::string("\x65", 1) + std::string(4, '\x02');
  const std::string encoded = unknown + message.SerializeAsString() + unknown;
  auto decoded = DecodeStateMessage(Slices(encoded, 5));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_TRUE(decoded->manifest.has_value());
  EXPECT_EQ(decoded->manifest->request_id(), "r");
  EXPECT_EQ(decoded->manifest->segments(0).bytes(), 99u);
}

TEST(WireTest, TheLastOneofFieldWins) {
  StateMessage data;
  data.mutable_data()->set_segment(1);
  StateMessage manifest;
  manifest.mutable_manifest()->set_request_id("m");
  auto decoded =
      DecodeStateMessage(Slices(data.SerializeAsString() + manifest.SerializeAsString(), 9));
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->manifest.has_value());
  decoded = DecodeStateMessage(Slices(manifest.SerializeAsString() + data.SerializeAsString(), 9));
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->manifest.has_value());
  EXPECT_EQ(decoded->segment, 1u);
}

TEST(WireTest, RefusesMalformedMessages) {
  StateMessage message;
  message.mutable_data()->set_bytes(std::string(100, 'b'));
  const std::string encoded = message.SerializeAsString();
  struct Case {
    std::string bytes;
    const char* says;
  };
  for (const Case& c : {Case{"", "neither a manifest nor segment data"},
                        Case{encoded.substr(0, encoded.size() - 1), "cut short"},
                        Case{std::string("\x12\x02\x1a\x05", 4), "cut short"},
                        Case{std::string("\x0a\x03\xff\xff\xff", 5), "does not parse"},
                        Case{std::string("\x0b", 1), "field 1 is cut short"},
                        Case{std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11),
                             "truncated field tag"}}) {
    auto decoded = DecodeStateMessage(Slices(c.bytes, 3));
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(decoded.status().message(), HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace ringserve::state
