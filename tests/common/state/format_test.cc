#include "common/state/format.h"

#include <xxhash.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::state {
namespace {

using internal::v1::Segment;
using internal::v1::StateManifest;
using ::testing::HasSubstr;
using testing::LoadTinyModel;
using testing::RandomState;
using testing::TinyModel;

constexpr uint64_t kMiB = 1 << 20;

class FormatTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = LoadTinyModel().release(); }
  static void TearDownTestSuite() { delete model_; }

  const StateLayout& layout() const { return model_->layout; }

  StateManifest Manifest(const StateBuffer& state, int64_t tokens, int64_t chunk = 0) {
    ManifestHeader header;
    header.request_id = "r1";
    header.ticket = "t1";
    header.model_fingerprint = model_->fingerprint;
    header.first_token = 5;
    auto m = BuildManifest(layout(), state, tokens, header, {chunk, false});
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }

  absl::StatusOr<std::unique_ptr<StateAssembler>> Assembler(const StateManifest& m,
                                                            StateBuffer* target) {
    return StateAssembler::Create(layout(), model_->fingerprint, m, target);
  }

  // Feeds every segment of `source` to `assembler` in pieces of at most `piece` bytes.
  static absl::Status FeedAll(const StateLayout& layout, const StateManifest& m,
                              const StateBuffer& source, StateAssembler* assembler, size_t piece) {
    for (int i = 0; i < m.segments_size(); ++i) {
      std::string bytes;
      for (const Span& s : SegmentSpans(layout, source, m.segments(i))) {
        bytes.append(static_cast<const char*>(s.data), s.bytes);
      }
      for (size_t at = 0; at < bytes.size(); at += piece) {
        const size_t n = std::min(piece, bytes.size() - at);
        absl::Status status = assembler->Consume(
            i, at,
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()) + at, n));
        if (!status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

  static TinyModel* model_;
};
TinyModel* FormatTest::model_ = nullptr;

TEST(StateSizeTest, MatchesTheModelSpecTable) {
  // model-spec section 5: Ring-mini-linear-2.0 and Ring-flash-linear-2.0.
  model::ModelConfig mini;
  mini.num_hidden_layers = 20;
  mini.layer_group_size = 5;
  mini.num_attention_heads = 16;
  mini.num_key_value_heads = 4;
  mini.head_dim = 128;
  model::ModelConfig flash = mini;
  flash.num_hidden_layers = 32;
  flash.layer_group_size = 8;
  flash.num_attention_heads = 32;

  const StateSize mini4k = ComputeStateSize(worker::LayoutOf(mini), 4096);
  EXPECT_EQ(mini4k.linear_bytes, 16 * kMiB);
  EXPECT_EQ(mini4k.kv_bytes, 32 * kMiB);
  EXPECT_EQ(mini4k.all_softmax_kv_bytes, 160 * kMiB);
  EXPECT_EQ(ComputeStateSize(worker::LayoutOf(mini), 131072).total(), 1040 * kMiB);
  EXPECT_EQ(ComputeStateSize(worker::LayoutOf(mini), 131072).all_softmax_kv_bytes, 5120 * kMiB);

  EXPECT_EQ(ComputeStateSize(worker::LayoutOf(flash), 1).linear_bytes, 56 * kMiB);
  EXPECT_EQ(ComputeStateSize(worker::LayoutOf(flash), 32768).total(), 312 * kMiB);
  EXPECT_EQ(ComputeStateSize(worker::LayoutOf(flash), 131072).all_softmax_kv_bytes, 8192 * kMiB);
}

TEST_F(FormatTest, FingerprintIsStableAndTracksTheWeights) {
  auto again = worker::ModelFingerprintOfDirectory(model_->dir.path());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, model_->fingerprint);
  EXPECT_EQ(model_->fingerprint.size(), 32u);
  auto other = LoadTinyModel(/*seed=*/8);
  EXPECT_NE(other->fingerprint, model_->fingerprint);
}

TEST_F(FormatTest, ManifestListsKvChunksThenLinearStates) {
  auto state = RandomState(*model_, 128, 100, 1);
  const StateManifest m = Manifest(*state, 100, /*chunk=*/64);
  EXPECT_EQ(m.format_version(), kFormatVersion);
  EXPECT_EQ(m.token_count(), 100u);
  EXPECT_EQ(m.first_token(), 5u);
  // Tiny: layers 3 and 7 softmax, the other 6 linear; two chunks of K and V.
  const uint64_t h = layout().num_attention_heads, hkv = layout().num_key_value_heads,
                 d = layout().head_dim;
  ASSERT_EQ(m.segments_size(), 2 * 2 * 2 + 6);
  const Segment& first = m.segments(0);
  EXPECT_EQ(first.kind(), internal::v1::SEGMENT_KEY);
  EXPECT_EQ(first.layer(), 3u);
  EXPECT_EQ(first.token_begin(), 0u);
  EXPECT_EQ(first.token_end(), 64u);
  EXPECT_EQ(first.dtype(), internal::v1::DTYPE_BF16);
  EXPECT_THAT(first.shape(), ::testing::ElementsAre(hkv, 64, d));
  EXPECT_EQ(first.bytes(), hkv * 64 * d * 2);
  EXPECT_EQ(m.segments(1).kind(), internal::v1::SEGMENT_VALUE);
  EXPECT_EQ(m.segments(2).layer(), 7u);
  EXPECT_EQ(m.segments(4).token_begin(), 64u);
  EXPECT_EQ(m.segments(4).token_end(), 100u);
  for (int i = 8; i < m.segments_size(); ++i) {
    const Segment& s = m.segments(i);
    EXPECT_EQ(s.kind(), internal::v1::SEGMENT_LINEAR_STATE);
    EXPECT_FALSE(layout().IsSoftmaxLayer(s.layer()));
    EXPECT_EQ(s.dtype(), internal::v1::DTYPE_F32);
    EXPECT_THAT(s.shape(), ::testing::ElementsAre(h, d, d));
  }
  // A checksum is the XXH3-64 of the segment's wire bytes ([Hkv, tokens, D]).
  std::string wire;
  for (const Span& s : state->KvSpans(0, false, 64, 100)) {
    wire.append(static_cast<const char*>(s.data), s.bytes);
  }
  EXPECT_EQ(m.segments(4).checksum(), XXH3_64bits(wire.data(), wire.size()));
}

TEST_F(FormatTest, ManifestNeedsTheStatePosition) {
  auto state = RandomState(*model_, 16, 8, 1);
  EXPECT_EQ(BuildManifest(layout(), *state, 9, {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildManifest(layout(), *state, 0, {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FormatTest, AssemblerRebuildsTheStateFromOddPieces) {
  auto source = RandomState(*model_, 100, 77, 3);
  const StateManifest m = Manifest(*source, 77, /*chunk=*/30);
  auto target = testing::NewState(*model_, 90);
  auto assembler = Assembler(m, target.get());
  ASSERT_TRUE(assembler.ok()) << assembler.status();
  ASSERT_TRUE(FeedAll(layout(), m, *source, assembler->get(), 1000).ok());
  ASSERT_TRUE((*assembler)->Finish().ok());
  EXPECT_EQ(target->position(), 77);
  EXPECT_EQ((*assembler)->bytes_received(), (*assembler)->bytes_total());
  EXPECT_EQ(testing::CompareStates(*source, *target, 77), "");
}

TEST_F(FormatTest, AssemblerReceivesInPlace) {
  auto source = RandomState(*model_, 40, 40, 4);
  const StateManifest m = Manifest(*source, 40);
  auto target = testing::NewState(*model_, 40);
  auto assembler = Assembler(m, target.get());
  ASSERT_TRUE(assembler.ok());
  for (int i = 0; i < m.segments_size(); ++i) {
    const auto from = SegmentSpans(layout(), *source, m.segments(i));
    ASSERT_TRUE((*assembler)
                    ->ConsumeInPlace(i,
                                     [&](const std::vector<Span>& to) {
                                       for (size_t k = 0; k < to.size(); ++k) {
                                         std::memcpy(to[k].data, from[k].data, to[k].bytes);
                                       }
                                       return absl::OkStatus();
                                     })
                    .ok());
  }
  ASSERT_TRUE((*assembler)->Finish().ok());
  EXPECT_EQ(testing::CompareStates(*source, *target, 40), "");
}

TEST_F(FormatTest, CorruptedSegmentIsDataLossNamingIt) {
  auto source = RandomState(*model_, 16, 16, 5);
  StateManifest m = Manifest(*source, 16);
  m.mutable_segments(2)->set_checksum(m.segments(2).checksum() ^ 1);
  auto target = testing::NewState(*model_, 16);
  auto assembler = Assembler(m, target.get());
  ASSERT_TRUE(assembler.ok());
  const absl::Status status = FeedAll(layout(), m, *source, assembler->get(), 1 << 20);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("segment 2 (key of layer 7"));
  EXPECT_EQ((*assembler)->Finish(), status);  // errors are sticky
}

TEST_F(FormatTest, PiecesMustComeInOrderAndFit) {
  auto source = RandomState(*model_, 8, 8, 6);
  const StateManifest m = Manifest(*source, 8);
  auto target = testing::NewState(*model_, 8);
  const std::vector<uint8_t> bytes(m.segments(0).bytes() + 1, 0);
  auto piece = [&](size_t n) { return std::span<const uint8_t>(bytes.data(), n); };
  struct Case {
    uint32_t segment;
    uint64_t offset;
    size_t size;
    const char* says;
  };
  for (const Case& c :
       {Case{1, 0, 16, "while segment 0"}, Case{0, 16, 16, "expected is at offset 0"},
        Case{0, 0, 0, "empty piece"}, Case{0, 0, bytes.size(), "overruns segment 0"},
        Case{99, 0, 16, "not in the manifest"}}) {
    auto assembler = Assembler(m, target.get());
    ASSERT_TRUE(assembler.ok());
    const absl::Status status = (*assembler)->Consume(c.segment, c.offset, piece(c.size));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(status.message(), HasSubstr(c.says));
  }
}

TEST_F(FormatTest, FinishBeforeTheLastByteIsDataLoss) {
  auto source = RandomState(*model_, 8, 8, 7);
  const StateManifest m = Manifest(*source, 8);
  auto target = testing::NewState(*model_, 8);
  auto assembler = Assembler(m, target.get());
  ASSERT_TRUE(assembler.ok());
  const std::vector<uint8_t> bytes(100, 0);
  ASSERT_TRUE((*assembler)->Consume(0, 0, bytes).ok());
  const absl::Status status = (*assembler)->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("incomplete"));
  EXPECT_EQ(target->position(), 0);
}

// Feeds `source` through a PieceReader, letting `edit` change each piece's checksum.
absl::Status FeedPieces(const StateLayout& layout, const StateManifest& m,
                        const StateBuffer& source, StateAssembler* assembler, size_t piece_bytes,
                        const std::function<void(const Piece&, std::optional<uint64_t>*)>& edit) {
  PieceReader reader(layout, source, m, piece_bytes);
  for (Piece piece; reader.Next(&piece).value();) {
    std::optional<uint64_t> checksum = piece.checksum;
    edit(piece, &checksum);
    uint64_t offset = piece.offset;
    for (size_t i = 0; i < piece.chunks.size(); ++i) {
      const bool last = i + 1 == piece.chunks.size();
      absl::Status status = assembler->Consume(piece.segment, offset, piece.chunks[i],
                                               last ? checksum : std::nullopt);
      if (!status.ok()) return status;
      offset += piece.chunks[i].size();
    }
  }
  return absl::OkStatus();
}

TEST_F(FormatTest, TrailingChecksumsTravelOnEachSegmentsLastPiece) {
  auto source = RandomState(*model_, 64, 50, 9);
  ManifestHeader header{"r1", "t1", model_->fingerprint, 0, 0, {}};
  auto trailing = BuildManifest(layout(), *source, 50, header, {16, true});
  auto upfront = BuildManifest(layout(), *source, 50, header, {16, false});
  ASSERT_TRUE(trailing.ok() && upfront.ok());
  EXPECT_TRUE(trailing->trailing_checksums());
  for (const Segment& s : trailing->segments()) EXPECT_EQ(s.checksum(), 0u);

  PieceReader reader(layout(), *source, *trailing, 700);
  for (Piece piece; reader.Next(&piece).value();) {
    const Segment& s = trailing->segments(piece.segment);
    const bool last = piece.offset + piece.size == s.bytes();
    ASSERT_EQ(piece.checksum.has_value(), last);
    if (last) {
      EXPECT_EQ(*piece.checksum, upfront->segments(piece.segment).checksum());
    }
  }

  auto target = testing::NewState(*model_, 64);
  auto assembler = Assembler(*trailing, target.get());
  ASSERT_TRUE(assembler.ok());
  ASSERT_TRUE(FeedPieces(layout(), *trailing, *source, assembler->get(), 700,
                         [](const Piece&, std::optional<uint64_t>*) {})
                  .ok());
  ASSERT_TRUE((*assembler)->Finish().ok());
  EXPECT_EQ(testing::CompareStates(*source, *target, 50), "");
}

TEST_F(FormatTest, TrailingChecksumFaults) {
  auto source = RandomState(*model_, 20, 20, 10);
  ManifestHeader header{"r1", "t1", model_->fingerprint, 0, 0, {}};
  auto trailing = BuildManifest(layout(), *source, 20, header, {0, true});
  auto upfront = BuildManifest(layout(), *source, 20, header, {0, false});
  ASSERT_TRUE(trailing.ok() && upfront.ok());
  auto target = testing::NewState(*model_, 20);
  struct Case {
    const StateManifest* manifest;
    std::function<void(const Piece&, std::optional<uint64_t>*)> edit;
    absl::StatusCode code;
    const char* says;
  };
  const std::vector<Case> cases = {
      {&*trailing, [](const Piece& p, std::optional<uint64_t>* c) { c->reset(); },
       absl::StatusCode::kInvalidArgument, "without the trailing checksum"},
      {&*trailing,
       [](const Piece& p, std::optional<uint64_t>* c) {
         if (p.segment == 1 && p.offset == 0) *c = 1;
       },
       absl::StatusCode::kInvalidArgument, "carries a checksum"},
      {&*trailing,
       [](const Piece& p, std::optional<uint64_t>* c) {
         if (p.segment == 3 && c->has_value()) **c ^= 1;
       },
       absl::StatusCode::kDataLoss, "segment 3 (value of layer 7"},
      {&*upfront, [](const Piece& p, std::optional<uint64_t>* c) { *c = 7; },
       absl::StatusCode::kInvalidArgument, "carries a checksum"},
  };
  for (const Case& c : cases) {
    auto assembler = Assembler(*c.manifest, target.get());
    ASSERT_TRUE(assembler.ok());
    const absl::Status status =
        FeedPieces(layout(), *c.manifest, *source, assembler->get(), 1000, c.edit);
    EXPECT_EQ(status.code(), c.code) << c.says << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(c.says));
  }
  auto assembler = Assembler(*trailing, target.get());
  ASSERT_TRUE(assembler.ok());
  const absl::Status in_place =
      (*assembler)->ConsumeInPlace(0, [](const std::vector<Span>&) { return absl::OkStatus(); });
  EXPECT_EQ(in_place.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(in_place.message(), HasSubstr("needs its checksum in the manifest"));
}

TEST_F(FormatTest, ManifestValidationNamesEachFault) {
  auto source = RandomState(*model_, 64, 64, 8);
  const StateManifest good = Manifest(*source, 64, 32);
  auto target = testing::NewState(*model_, 64);
  ASSERT_TRUE(Assembler(good, target.get()).ok());
  const int64_t hkv = layout().num_key_value_heads, d = layout().head_dim;
  const std::string bad_shape =
      absl::StrCat("shape [", hkv + 1, ", 32, ", d, "], expected [", hkv, ", 32, ", d, "]");
  struct Case {
    std::function<void(StateManifest*)> edit;
    absl::StatusCode code;
    const char* says;
  };
  const std::vector<Case> cases = {
      {[](StateManifest* m) { m->set_format_version(99); }, absl::StatusCode::kUnimplemented,
       "version 99"},
      {[](StateManifest* m) { m->set_model_fingerprint("other"); },
       absl::StatusCode::kFailedPrecondition, "fingerprint 'other'"},
      {[](StateManifest* m) { m->set_token_count(65); }, absl::StatusCode::kInvalidArgument,
       "capacity"},
      {[](StateManifest* m) { m->mutable_segments(0)->set_dtype(internal::v1::DTYPE_F16); },
       absl::StatusCode::kInvalidArgument, "dtype DTYPE_F16"},
      {[&](StateManifest* m) { m->mutable_segments(0)->set_shape(0, hkv + 1); },
       absl::StatusCode::kInvalidArgument, bad_shape.c_str()},
      {[](StateManifest* m) { m->mutable_segments(0)->set_bytes(1); },
       absl::StatusCode::kInvalidArgument, "1 bytes"},
      {[](StateManifest* m) { m->mutable_segments(0)->set_layer(0); },
       absl::StatusCode::kInvalidArgument, "layer 0 is a linear attention layer"},
      {[](StateManifest* m) { m->mutable_segments(0)->set_layer(8); },
       absl::StatusCode::kInvalidArgument, "outside the model's 8 layers"},
      {[](StateManifest* m) { m->mutable_segments(0)->set_kind(internal::v1::SEGMENT_MTP_KEY); },
       absl::StatusCode::kUnimplemented, "MTP"},
      {[](StateManifest* m) { *m->add_segments() = m->segments(0); },
       absl::StatusCode::kInvalidArgument, "follows"},
      {[](StateManifest* m) { m->mutable_segments()->RemoveLast(); },
       absl::StatusCode::kInvalidArgument, "no linear state for layer 6"},
      {[](StateManifest* m) { *m->add_segments() = m->segments(m->segments_size() - 1); },
       absl::StatusCode::kInvalidArgument, "duplicates"},
      {[](StateManifest* m) { m->mutable_segments()->DeleteSubrange(4, 1); },
       absl::StatusCode::kInvalidArgument, "lacks tokens from 32 of the key of layer 3"},
      {[&](StateManifest* m) {
         Segment* s = m->mutable_segments(4);  // key of layer 3, tokens [32, 64) -> [16, 64)
         s->set_token_begin(16);
         s->set_shape(1, 48);
         s->set_bytes(hkv * 48 * d * 2);
       },
       absl::StatusCode::kInvalidArgument, "overlaps segment 0"},
  };
  for (const Case& c : cases) {
    StateManifest m = good;
    c.edit(&m);
    auto assembler = Assembler(m, target.get());
    EXPECT_EQ(assembler.status().code(), c.code) << c.says << ": " << assembler.status();
    EXPECT_THAT(assembler.status().message(), HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace ringserve::state
