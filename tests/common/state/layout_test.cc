// The state format with no model behind it: a layout and host buffers are all it needs (this
// suite links ringserve_state alone).
#include "common/state/layout.h"

#include <cstring>
#include <memory>
#include <vector>

#include "common/state/format.h"
#include "gtest/gtest.h"

namespace ringserve::state {
namespace {

// A state in plain host vectors: per linear layer [H, D, D] fp32, per softmax layer K and V
// [Hkv, capacity, D] bf16.
class HostState final : public StateBuffer {
 public:
  HostState(const StateLayout& layout, int64_t capacity)
      : layout_(layout),
        capacity_(capacity),
        linear_(static_cast<size_t>(layout.num_linear_layers() * LinearElems())),
        kv_(static_cast<size_t>(2 * layout.num_softmax_layers() * layout.num_key_value_heads *
                                capacity * layout.head_dim)) {}

  // Fills every byte from a counter starting at `seed`.
  void Fill(uint8_t seed) {
    uint8_t v = seed;
    for (float& f : linear_) std::memset(&f, v++, sizeof(f));
    for (uint16_t& h : kv_) h = static_cast<uint16_t>(v++ * 257);
  }

  int64_t position() const override { return position_; }
  void set_position(int64_t position) override { position_ = position; }
  int64_t capacity() const override { return capacity_; }
  int64_t num_linear() const override { return layout_.num_linear_layers(); }
  int64_t num_softmax() const override { return layout_.num_softmax_layers(); }
  Span LinearState(int64_t index) const override {
    return {const_cast<float*>(linear_.data()) + index * LinearElems(),
            static_cast<size_t>(LinearElems()) * sizeof(float)};
  }
  std::vector<Span> KvSpans(int64_t index, bool value, int64_t begin, int64_t end) const override {
    std::vector<Span> spans;
    const int64_t d = layout_.head_dim;
    for (int64_t h = 0; h < layout_.num_key_value_heads; ++h) {
      const int64_t head = (2 * index + (value ? 1 : 0)) * layout_.num_key_value_heads + h;
      spans.push_back({const_cast<uint16_t*>(kv_.data()) + (head * capacity_ + begin) * d,
                       static_cast<size_t>((end - begin) * d) * sizeof(uint16_t)});
    }
    return spans;
  }
  size_t linear_bytes_total() const override { return linear_.size() * sizeof(float); }
  size_t kv_bytes_per_token() const override {
    return static_cast<size_t>(2 * layout_.num_softmax_layers() * layout_.num_key_value_heads *
                               layout_.head_dim) *
           sizeof(uint16_t);
  }

 private:
  int64_t LinearElems() const {
    return layout_.num_attention_heads * layout_.head_dim * layout_.head_dim;
  }

  const StateLayout layout_;
  const int64_t capacity_;
  int64_t position_ = 0;
  std::vector<float> linear_;
  std::vector<uint16_t> kv_;
};

StateLayout SmallLayout() {
  StateLayout layout;
  layout.softmax = {false, false, true, false, false, true};
  layout.num_attention_heads = 2;
  layout.num_key_value_heads = 2;
  layout.head_dim = 4;
  layout.max_positions = 64;
  return layout;
}

TEST(StateLayoutTest, CountsLayersByKind) {
  const StateLayout layout = SmallLayout();
  EXPECT_EQ(layout.num_layers(), 6);
  EXPECT_EQ(layout.num_softmax_layers(), 2);
  EXPECT_EQ(layout.num_linear_layers(), 4);
  const StateSize size = ComputeStateSize(layout, 10);
  EXPECT_EQ(size.linear_bytes, 4u * 2 * 4 * 4 * sizeof(float));
  EXPECT_EQ(size.kv_bytes, 2u * 2 * 2 * 10 * 4 * sizeof(uint16_t));
}

TEST(StateLayoutTest, HostStatesRoundTripThroughTheFormat) {
  const StateLayout layout = SmallLayout();
  HostState source(layout, 16);
  source.Fill(3);
  source.set_position(10);
  ManifestHeader header;
  header.request_id = "r";
  header.ticket = "t";
  header.model_fingerprint = "fp";
  auto manifest = BuildManifest(layout, source, 10, header, {/*kv_chunk_tokens=*/4, true});
  ASSERT_TRUE(manifest.ok()) << manifest.status();

  HostState target(layout, 12);
  auto assembler = StateAssembler::Create(layout, "fp", *manifest, &target);
  ASSERT_TRUE(assembler.ok()) << assembler.status();
  PieceReader reader(layout, source, *manifest, /*piece_bytes=*/24);
  for (Piece piece; reader.Next(&piece).value();) {
    uint64_t offset = piece.offset;
    for (size_t i = 0; i < piece.chunks.size(); ++i) {
      const bool last = i + 1 == piece.chunks.size();
      ASSERT_TRUE((*assembler)
                      ->Consume(piece.segment, offset, piece.chunks[i],
                                last ? piece.checksum : std::nullopt)
                      .ok());
      offset += piece.chunks[i].size();
    }
  }
  ASSERT_TRUE((*assembler)->Finish().ok());
  EXPECT_EQ(target.position(), 10);
  EXPECT_EQ((*assembler)->bytes_total(), ComputeStateSize(layout, 10).total());
  for (int64_t i = 0; i < layout.num_linear_layers(); ++i) {
    EXPECT_EQ(std::memcmp(source.LinearState(i).data, target.LinearState(i).data,
                          source.LinearState(i).bytes),
              0);
  }
  for (int64_t i = 0; i < layout.num_softmax_layers(); ++i) {
    for (bool value : {false, true}) {
      const auto from = source.KvSpans(i, value, 0, 10);
      const auto to = target.KvSpans(i, value, 0, 10);
      for (size_t h = 0; h < from.size(); ++h) {
        EXPECT_EQ(std::memcmp(from[h].data, to[h].data, from[h].bytes), 0);
      }
    }
  }
}

TEST(StateLayoutTest, TheAssemblerRefusesAStateOfAnotherLayout) {
  const StateLayout layout = SmallLayout();
  HostState source(layout, 8);
  source.set_position(8);
  ManifestHeader header;
  header.model_fingerprint = "fp";
  auto manifest = BuildManifest(layout, source, 8, header, {});
  ASSERT_TRUE(manifest.ok());
  StateLayout other = layout;
  other.head_dim = 8;
  HostState target(other, 8);
  EXPECT_EQ(StateAssembler::Create(other, "fp", *manifest, &target).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ringserve::state
