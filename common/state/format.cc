#include "common/state/format.h"

#include <xxhash.h>
#if defined(__x86_64__)
// XXH3 through the library's runtime dispatch: AVX2 or AVX-512 where the CPU has them.
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace ringserve::state {
namespace {

using internal::v1::Segment;
using internal::v1::SegmentKind;
using internal::v1::StateManifest;

// Bytes copied per step of Consume, hashed right after the copy while they are in cache.
constexpr size_t kCopyBlock = 256 << 10;
// Bytes staged per copy when hashing memory that is not in place.
constexpr size_t kStageBytes = 4 << 20;

class HostMemory : public StateMemory {
 public:
  bool in_place() const override { return true; }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) const override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) const override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
};

// Feeds the bytes of `spans` to `hasher`, staging them through `scratch` when not in place.
absl::Status HashSpans(const std::vector<Span>& spans, const StateMemory* memory,
                       std::vector<uint8_t>* scratch, SegmentHasher* hasher) {
  for (const Span& span : spans) {
    if (memory->in_place()) {
      hasher->Update(span.data, span.bytes);
      continue;
    }
    scratch->resize(kStageBytes);
    for (size_t at = 0; at < span.bytes; at += kStageBytes) {
      const size_t n = std::min(kStageBytes, span.bytes - at);
      RETURN_IF_ERROR(
          memory->CopyToHost(scratch->data(), static_cast<const uint8_t*>(span.data) + at, n));
      hasher->Update(scratch->data(), n);
    }
  }
  return absl::OkStatus();
}

// The position of `layer` among the layers of its kind (linear or softmax).
int64_t KindIndex(const StateLayout& layout, int64_t layer) {
  const bool softmax = layout.IsSoftmaxLayer(layer);
  int64_t index = 0;
  for (int64_t i = 0; i < layer; ++i) index += layout.IsSoftmaxLayer(i) == softmax ? 1 : 0;
  return index;
}

const char* KindName(int kind) {
  switch (kind) {
    case internal::v1::SEGMENT_LINEAR_STATE:
      return "linear state";
    case internal::v1::SEGMENT_KEY:
      return "key";
    case internal::v1::SEGMENT_VALUE:
      return "value";
    case internal::v1::SEGMENT_MTP_KEY:
      return "mtp key";
    case internal::v1::SEGMENT_MTP_VALUE:
      return "mtp value";
    default:
      return "unknown kind";
  }
}

bool IsKv(int kind) {
  return kind == internal::v1::SEGMENT_KEY || kind == internal::v1::SEGMENT_VALUE;
}

std::string ShapeString(const Segment& s) {
  std::string out = "[";
  for (int i = 0; i < s.shape_size(); ++i) absl::StrAppend(&out, i ? ", " : "", s.shape(i));
  return out + "]";
}

void AddSegment(StateManifest* m, SegmentKind kind, int64_t layer, int64_t begin, int64_t end,
                internal::v1::DType dtype, std::vector<uint64_t> shape, uint64_t elem_bytes) {
  Segment* s = m->add_segments();
  s->set_kind(kind);
  s->set_layer(static_cast<uint32_t>(layer));
  s->set_token_begin(static_cast<uint32_t>(begin));
  s->set_token_end(static_cast<uint32_t>(end));
  s->set_dtype(dtype);
  uint64_t bytes = elem_bytes;
  for (uint64_t d : shape) {
    s->add_shape(d);
    bytes *= d;
  }
  s->set_bytes(bytes);
}

// Checks one segment's kind, layer, token range, dtype, shape and size against the model.
absl::Status CheckSegment(const StateLayout& c, const StateManifest& m, int index, int64_t tokens) {
  const Segment& s = m.segments(index);
  const int64_t layer = s.layer();
  if (s.kind() == internal::v1::SEGMENT_MTP_KEY || s.kind() == internal::v1::SEGMENT_MTP_VALUE) {
    return absl::UnimplementedError(absl::StrCat(
        DescribeSegment(m, index), ": MTP caches are not part of this worker's state"));
  }
  if (s.kind() != internal::v1::SEGMENT_LINEAR_STATE && !IsKv(s.kind())) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment ", index, " has unknown kind ", static_cast<int>(s.kind())));
  }
  if (layer >= c.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, index), ": layer ", layer,
                                                   " is outside the model's ", c.num_layers(),
                                                   " layers"));
  }
  const bool linear = s.kind() == internal::v1::SEGMENT_LINEAR_STATE;
  if (linear == c.IsSoftmaxLayer(layer)) {
    return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, index), ": layer ", layer,
                                                   " is a ", linear ? "softmax" : "linear",
                                                   " attention layer"));
  }
  std::vector<uint64_t> shape;
  internal::v1::DType dtype;
  uint64_t elem;
  if (linear) {
    if (s.token_begin() != 0 || s.token_end() != tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          DescribeSegment(m, index), ": a linear state covers tokens [0, ", tokens, ")"));
    }
    dtype = internal::v1::DTYPE_F32;
    elem = sizeof(float);
    shape = {static_cast<uint64_t>(c.num_attention_heads), static_cast<uint64_t>(c.head_dim),
             static_cast<uint64_t>(c.head_dim)};
  } else {
    if (s.token_begin() >= s.token_end() || s.token_end() > tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat(DescribeSegment(m, index),
                       ": the token range is empty or ends past the state's ", tokens, " tokens"));
    }
    dtype = internal::v1::DTYPE_BF16;
    elem = sizeof(uint16_t);
    shape = {static_cast<uint64_t>(c.num_key_value_heads),
             static_cast<uint64_t>(s.token_end() - s.token_begin()),
             static_cast<uint64_t>(c.head_dim)};
  }
  if (s.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, index), ": dtype ",
                                                   internal::v1::DType_Name(s.dtype()),
                                                   ", expected ", internal::v1::DType_Name(dtype)));
  }
  uint64_t bytes = elem;
  bool same_shape = s.shape_size() == static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    same_shape = same_shape && s.shape(static_cast<int>(i)) == shape[i];
    bytes *= shape[i];
  }
  if (!same_shape) {
    Segment expected;
    for (uint64_t d : shape) expected.add_shape(d);
    return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, index), ": shape ",
                                                   ShapeString(s), ", expected ",
                                                   ShapeString(expected)));
  }
  if (s.bytes() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, index), ": ", s.bytes(),
                                                   " bytes, its shape holds ", bytes));
  }
  return absl::OkStatus();
}

// Checks that the segments cover the state exactly once, K and V before the linear states.
absl::Status CheckCoverage(const StateLayout& c, const StateManifest& m, int64_t tokens) {
  std::map<int64_t, int> linear;  // layer -> segment
  // (layer, kind) -> (token_begin, segment)
  std::map<std::pair<int64_t, int>, std::vector<std::pair<int64_t, int>>> kv;
  int first_linear = -1;
  for (int i = 0; i < m.segments_size(); ++i) {
    const Segment& s = m.segments(i);
    if (s.kind() == internal::v1::SEGMENT_LINEAR_STATE) {
      auto [it, inserted] = linear.emplace(s.layer(), i);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(DescribeSegment(m, i), " duplicates ", DescribeSegment(m, it->second)));
      }
      if (first_linear < 0) first_linear = i;
    } else {
      if (first_linear >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(DescribeSegment(m, i), " follows ",
                                                       DescribeSegment(m, first_linear),
                                                       "; linear states come after all K and V"));
      }
      kv[{s.layer(), s.kind()}].emplace_back(s.token_begin(), i);
    }
  }
  for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
    if (!c.IsSoftmaxLayer(layer)) {
      if (linear.count(layer) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("the manifest has no linear state for layer ", layer));
      }
      continue;
    }
    for (int kind : {internal::v1::SEGMENT_KEY, internal::v1::SEGMENT_VALUE}) {
      auto& ranges = kv[{layer, kind}];
      std::sort(ranges.begin(), ranges.end());
      int64_t covered = 0;
      int previous = -1;
      for (const auto& [begin, index] : ranges) {
        if (begin < covered) {
          return absl::InvalidArgumentError(
              absl::StrCat(DescribeSegment(m, index), " overlaps ", DescribeSegment(m, previous)));
        }
        if (begin > covered) break;
        covered = m.segments(index).token_end();
        previous = index;
      }
      if (covered != tokens) {
        return absl::InvalidArgumentError(absl::StrCat("the manifest lacks tokens from ", covered,
                                                       " of the ", KindName(kind), " of layer ",
                                                       layer, " (", tokens, " tokens)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ModelFingerprint(std::string_view config_json, const base::TensorStore& store) {
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> hash(XXH3_createState(),
                                                                       &XXH3_freeState);
  XXH3_128bits_reset(hash.get());
  auto feed = [&](const void* data, size_t bytes) { XXH3_128bits_update(hash.get(), data, bytes); };
  auto feed_u64 = [&](uint64_t v) { feed(&v, sizeof(v)); };
  auto feed_string = [&](std::string_view s) {
    feed_u64(s.size());
    feed(s.data(), s.size());
  };
  feed_string(config_json);
  for (const auto& [name, tensor] : store.all()) {
    feed_string(name);
    feed_string(base::DTypeName(tensor->dtype));
    feed_u64(tensor->shape.size());
    for (int64_t d : tensor->shape) feed_u64(static_cast<uint64_t>(d));
    feed_u64(XXH3_64bits(tensor->data, tensor->bytes));
  }
  const XXH128_hash_t digest = XXH3_128bits_digest(hash.get());
  return absl::StrFormat("%016x%016x", digest.high64, digest.low64);
}

StateSize ComputeStateSize(const StateLayout& c, int64_t tokens) {
  const uint64_t kv_per_layer_token =
      2 * static_cast<uint64_t>(c.num_key_value_heads * c.head_dim) * sizeof(uint16_t);
  StateSize size;
  size.linear_bytes = static_cast<uint64_t>(c.num_linear_layers() * c.num_attention_heads *
                                            c.head_dim * c.head_dim) *
                      sizeof(float);
  size.kv_bytes = kv_per_layer_token * static_cast<uint64_t>(c.num_softmax_layers() * tokens);
  size.all_softmax_kv_bytes = kv_per_layer_token * static_cast<uint64_t>(c.num_layers() * tokens);
  return size;
}

absl::StatusOr<StateManifest> BuildManifest(const StateLayout& c, const StateBuffer& state,
                                            int64_t tokens, const ManifestHeader& header,
                                            const ManifestOptions& options) {
  const int64_t kv_chunk_tokens = options.kv_chunk_tokens;
  if (tokens < 1 || tokens > state.capacity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token count ", tokens, " is outside the state's capacity [1, ", state.capacity(), "]"));
  }
  if (state.position() != tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the state holds ", state.position(),
                                                   " tokens, not the ", tokens, " to send"));
  }
  if (state.num_linear() != c.num_linear_layers() ||
      state.num_softmax() != c.num_softmax_layers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the state has ", state.num_linear(), " linear and ", state.num_softmax(),
        " softmax layers; the model has ", c.num_linear_layers(), " and ", c.num_softmax_layers()));
  }
  if (kv_chunk_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_chunk_tokens ", kv_chunk_tokens, " is negative"));
  }
  StateManifest m;
  m.set_format_version(kFormatVersion);
  m.set_model_fingerprint(header.model_fingerprint);
  m.set_request_id(header.request_id);
  m.set_ticket(header.ticket);
  m.set_token_count(static_cast<uint32_t>(tokens));
  m.set_first_token(header.first_token);
  *m.mutable_sampling() = header.sampling;
  m.set_sender_epoch(header.sender_epoch);
  m.set_trailing_checksums(options.trailing_checksums);
  const int64_t chunk = kv_chunk_tokens > 0 ? kv_chunk_tokens : tokens;
  const auto hkv = static_cast<uint64_t>(c.num_key_value_heads);
  const auto d = static_cast<uint64_t>(c.head_dim);
  for (int64_t begin = 0; begin < tokens; begin += chunk) {
    const int64_t end = std::min(tokens, begin + chunk);
    for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
      if (!c.IsSoftmaxLayer(layer)) continue;
      for (SegmentKind kind : {internal::v1::SEGMENT_KEY, internal::v1::SEGMENT_VALUE}) {
        AddSegment(&m, kind, layer, begin, end, internal::v1::DTYPE_BF16,
                   {hkv, static_cast<uint64_t>(end - begin), d}, sizeof(uint16_t));
      }
    }
  }
  for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
    if (c.IsSoftmaxLayer(layer)) continue;
    AddSegment(&m, internal::v1::SEGMENT_LINEAR_STATE, layer, 0, tokens, internal::v1::DTYPE_F32,
               {static_cast<uint64_t>(c.num_attention_heads), d, d}, sizeof(float));
  }
  if (options.trailing_checksums) return m;
  SegmentHasher hasher;
  std::vector<uint8_t> scratch;
  for (Segment& s : *m.mutable_segments()) {
    hasher.Reset();
    RETURN_IF_ERROR(HashSpans(SegmentSpans(c, state, s), options.memory, &scratch, &hasher));
    s.set_checksum(hasher.Digest());
  }
  return m;
}

std::vector<Span> SegmentSpans(const StateLayout& layout, const StateBuffer& state,
                               const Segment& segment) {
  const int64_t index = KindIndex(layout, segment.layer());
  if (segment.kind() == internal::v1::SEGMENT_LINEAR_STATE) {
    return {state.LinearState(index)};
  }
  return state.KvSpans(index, segment.kind() == internal::v1::SEGMENT_VALUE, segment.token_begin(),
                       segment.token_end());
}

std::string DescribeSegment(const StateManifest& manifest, int index) {
  if (index < 0 || index >= manifest.segments_size()) {
    return absl::StrCat("segment ", index, " (not in the manifest's ", manifest.segments_size(),
                        " segments)");
  }
  const Segment& s = manifest.segments(index);
  return absl::StrCat("segment ", index, " (", KindName(s.kind()), " of layer ", s.layer(),
                      ", tokens [", s.token_begin(), ", ", s.token_end(), "))");
}

const StateMemory* StateMemory::Host() {
  static const StateMemory* host = new HostMemory();
  return host;
}

void SegmentHasher::Deleter::operator()(XXH3_state_s* state) const { XXH3_freeState(state); }

SegmentHasher::SegmentHasher() : state_(XXH3_createState()) { Reset(); }
void SegmentHasher::Reset() { XXH3_64bits_reset(state_.get()); }
void SegmentHasher::Update(const void* data, size_t bytes) {
  XXH3_64bits_update(state_.get(), data, bytes);
}
uint64_t SegmentHasher::Digest() const { return XXH3_64bits_digest(state_.get()); }

absl::StatusOr<bool> PieceReader::Next(Piece* piece) {
  if (segment_ >= manifest_.segments_size()) return false;
  const Segment& segment = manifest_.segments(segment_);
  if (offset_ == 0) {
    spans_ = SegmentSpans(layout_, state_, segment);
    span_ = 0;
    span_offset_ = 0;
    hasher_.Reset();
  }
  piece->segment = static_cast<uint32_t>(segment_);
  piece->offset = offset_;
  piece->size = std::min<uint64_t>(piece_bytes_, segment.bytes() - offset_);
  piece->chunks.clear();
  piece->checksum.reset();
  if (!memory_->in_place()) staging_.resize(piece->size);
  size_t staged = 0;
  for (uint64_t left = piece->size; left > 0;) {
    const Span& span = spans_[span_];
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, span.bytes - span_offset_));
    const auto* data = static_cast<const uint8_t*>(span.data) + span_offset_;
    if (memory_->in_place()) {
      piece->chunks.emplace_back(data, n);
    } else {
      RETURN_IF_ERROR(memory_->CopyToHost(staging_.data() + staged, data, n));
      staged += n;
    }
    left -= n;
    span_offset_ += n;
    if (span_offset_ == span.bytes) {
      ++span_;
      span_offset_ = 0;
    }
  }
  if (!memory_->in_place()) piece->chunks.emplace_back(staging_.data(), staged);
  if (manifest_.trailing_checksums()) {
    for (const std::span<const uint8_t>& chunk : piece->chunks) {
      hasher_.Update(chunk.data(), chunk.size());
    }
  }
  offset_ += piece->size;
  if (offset_ == segment.bytes()) {
    if (manifest_.trailing_checksums()) piece->checksum = hasher_.Digest();
    ++segment_;
    offset_ = 0;
  }
  return true;
}

StateAssembler::StateAssembler(const StateLayout& layout, StateManifest manifest,
                               StateBuffer* state, const StateMemory* memory)
    : layout_(layout), manifest_(std::move(manifest)), state_(state), memory_(memory) {
  for (const Segment& s : manifest_.segments()) bytes_total_ += s.bytes();
}

absl::StatusOr<std::unique_ptr<StateAssembler>> StateAssembler::Create(
    const StateLayout& layout, const std::string& model_fingerprint, StateManifest manifest,
    StateBuffer* state, const StateMemory* memory) {
  if (manifest.format_version() != kFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("state format version ", manifest.format_version(),
                                                 " is not supported; this worker reads version ",
                                                 kFormatVersion));
  }
  if (manifest.model_fingerprint() != model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("the sender's model fingerprint '", manifest.model_fingerprint(),
                     "' does not match this worker's '", model_fingerprint, "'"));
  }
  const int64_t tokens = manifest.token_count();
  if (tokens < 1 || tokens > state->capacity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token count ", tokens, " is outside the reserved capacity [1, ", state->capacity(), "]"));
  }
  for (int i = 0; i < manifest.segments_size(); ++i) {
    RETURN_IF_ERROR(CheckSegment(layout, manifest, i, tokens));
  }
  RETURN_IF_ERROR(CheckCoverage(layout, manifest, tokens));
  return std::unique_ptr<StateAssembler>(
      new StateAssembler(layout, std::move(manifest), state, memory));
}

absl::Status StateAssembler::Fail(absl::Status status) {
  error_ = status;
  return status;
}

absl::Status StateAssembler::CheckNext(uint32_t segment, uint64_t offset, uint64_t size,
                                       const std::optional<uint64_t>& checksum) {
  if (!error_.ok()) return error_;
  const int index = static_cast<int>(std::min<uint32_t>(segment, INT32_MAX));
  if (index != next_segment_) {
    if (next_segment_ >= manifest_.segments_size()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "piece for ", DescribeSegment(manifest_, index), " after the last segment")));
    }
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("piece for ", DescribeSegment(manifest_, index), " arrived while ",
                     DescribeSegment(manifest_, next_segment_), " is expected (", segment_received_,
                     " of its ", manifest_.segments(next_segment_).bytes(), " bytes received)")));
  }
  const uint64_t segment_bytes = manifest_.segments(index).bytes();
  if (offset != segment_received_) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("piece at offset ", offset, " of ", DescribeSegment(manifest_, index),
                     "; the next byte expected is at offset ", segment_received_)));
  }
  if (size == 0) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("empty piece for ", DescribeSegment(manifest_, index))));
  }
  if (size > segment_bytes - offset) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "piece of ", size, " bytes at offset ", offset, " overruns ",
        DescribeSegment(manifest_, index), ", which holds ", segment_bytes, " bytes")));
  }
  const bool ends_segment = size == segment_bytes - offset;
  if (checksum.has_value() != (manifest_.trailing_checksums() && ends_segment)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "piece at offset ", offset, " of ", DescribeSegment(manifest_, index),
        checksum.has_value() ? " carries a checksum, which only the last piece does when the "
                               "checksums trail"
                             : " ends the segment without the trailing checksum")));
  }
  if (segment_received_ == 0) {
    spans_ = SegmentSpans(layout_, *state_, manifest_.segments(index));
    span_index_ = 0;
    span_offset_ = 0;
    hasher_.Reset();
  }
  return absl::OkStatus();
}

absl::Status StateAssembler::EndPiece(uint64_t bytes, const std::optional<uint64_t>& checksum) {
  segment_received_ += bytes;
  bytes_received_ += bytes;
  const Segment& s = manifest_.segments(next_segment_);
  if (segment_received_ < s.bytes()) return absl::OkStatus();
  const uint64_t got = hasher_.Digest();
  const uint64_t want = checksum.value_or(s.checksum());
  if (got != want) {
    return Fail(absl::DataLossError(
        absl::StrFormat("%s is corrupted: its bytes hash to %016x, the sender's checksum is %016x",
                        DescribeSegment(manifest_, next_segment_), got, want)));
  }
  ++next_segment_;
  segment_received_ = 0;
  spans_.clear();
  return absl::OkStatus();
}

absl::Status StateAssembler::Consume(uint32_t segment, uint64_t offset,
                                     std::span<const uint8_t> bytes,
                                     std::optional<uint64_t> checksum) {
  RETURN_IF_ERROR(CheckNext(segment, offset, bytes.size(), checksum));
  const uint8_t* src = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const Span& span = spans_[span_index_];
    const size_t n = std::min({left, span.bytes - span_offset_, kCopyBlock});
    uint8_t* dst = static_cast<uint8_t*>(span.data) + span_offset_;
    if (memory_->in_place()) {
      std::memcpy(dst, src, n);
      hasher_.Update(dst, n);
    } else {
      hasher_.Update(src, n);
      absl::Status copied = memory_->CopyFromHost(dst, src, n);
      if (!copied.ok()) return Fail(std::move(copied));
    }
    src += n;
    left -= n;
    span_offset_ += n;
    if (span_offset_ == span.bytes) {
      ++span_index_;
      span_offset_ = 0;
    }
  }
  return EndPiece(bytes.size(), checksum);
}

absl::Status StateAssembler::ConsumeInPlace(
    uint32_t segment, const std::function<absl::Status(const std::vector<Span>&)>& fill) {
  if (!error_.ok()) return error_;
  if (manifest_.trailing_checksums()) {
    return Fail(absl::InvalidArgumentError(
        "a segment received in place needs its checksum in the manifest"));
  }
  const int index = static_cast<int>(std::min<uint32_t>(segment, INT32_MAX));
  const uint64_t size = index < manifest_.segments_size() ? manifest_.segments(index).bytes() : 1;
  RETURN_IF_ERROR(CheckNext(segment, 0, size, std::nullopt));
  absl::Status filled = fill(spans_);
  if (filled.ok()) filled = HashSpans(spans_, memory_, &scratch_, &hasher_);
  if (!filled.ok()) return Fail(std::move(filled));
  return EndPiece(size, std::nullopt);
}

absl::Status StateAssembler::Finish() {
  if (!error_.ok()) return error_;
  if (next_segment_ < manifest_.segments_size()) {
    return Fail(absl::DataLossError(absl::StrCat(
        "the state is incomplete: ", DescribeSegment(manifest_, next_segment_), " has ",
        segment_received_, " of its ", manifest_.segments(next_segment_).bytes(), " bytes; ",
        bytes_received_, " of ", bytes_total_, " bytes arrived")));
  }
  state_->set_position(manifest_.token_count());
  return absl::OkStatus();
}

}  // namespace ringserve::state
