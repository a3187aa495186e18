#include "common/state/wire.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringserve::state {
namespace {

enum WireType : uint64_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// StateMessage and SegmentData field numbers.
constexpr uint64_t kManifestField = 1;
constexpr uint64_t kDataField = 2;
constexpr uint64_t kSegmentField = 1;
constexpr uint64_t kOffsetField = 2;
constexpr uint64_t kBytesField = 3;
constexpr uint64_t kChecksumField = 4;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

uint8_t* PutVarint(uint8_t* out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) *out++ = static_cast<uint8_t>(v | 0x80);
  *out++ = static_cast<uint8_t>(v);
  return out;
}

uint64_t Tag(uint64_t field, WireType type) { return field << 3 | type; }

// SegmentData without its bytes: the fields before them and, after them, the checksum.
struct Framing {
  size_t head;  // segment, offset, bytes' tag and length
  size_t tail;  // checksum
};

Framing SegmentDataFraming(const Piece& piece) {
  Framing f;
  f.head = VarintSize(Tag(kSegmentField, kVarint)) + VarintSize(piece.segment) +
           VarintSize(Tag(kOffsetField, kVarint)) + VarintSize(piece.offset) +
           VarintSize(Tag(kBytesField, kLengthDelimited)) + VarintSize(piece.size);
  f.tail = piece.checksum.has_value()
               ? VarintSize(Tag(kChecksumField, kVarint)) + VarintSize(*piece.checksum)
               : 0;
  return f;
}

// Reads a list of slices as one byte stream.
class SliceCursor {
 public:
  explicit SliceCursor(const std::vector<grpc::Slice>& slices) : slices_(slices) { Normalize(); }

  uint64_t position() const { return position_; }
  bool done() const { return slice_ == slices_.size(); }

  bool ReadVarint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && !done(); shift += 7) {
      const uint8_t b = slices_[slice_].begin()[offset_];
      Advance(1);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *value = v;
        return true;
      }
    }
    return false;
  }

  // Moves past `n` bytes, appending their pieces to `out` when it is not null.
  bool Take(uint64_t n, std::vector<std::span<const uint8_t>>* out) {
    while (n > 0) {
      if (done()) return false;
      const grpc::Slice& s = slices_[slice_];
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, s.size() - offset_));
      if (out != nullptr) out->emplace_back(s.begin() + offset_, k);
      Advance(k);
      n -= k;
    }
    return true;
  }

  bool Skip(uint64_t type) {
    uint64_t v;
    switch (type) {
      case kVarint:
        return ReadVarint(&v);
      case kFixed64:
        return Take(8, nullptr);
      case kLengthDelimited:
        return ReadVarint(&v) && Take(v, nullptr);
      case kFixed32:
        return Take(4, nullptr);
      default:
        return false;
    }
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    position_ += n;
    Normalize();
  }
  void Normalize() {
    while (slice_ < slices_.size() && offset_ == slices_[slice_].size()) {
      ++slice_;
      offset_ = 0;
    }
  }

  const std::vector<grpc::Slice>& slices_;
  size_t slice_ = 0;
  size_t offset_ = 0;
  uint64_t position_ = 0;
};

absl::Status Malformed(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed state message: ", what));
}

// Merges the SegmentData fields in [position, end) into `m`.
absl::Status DecodeSegmentData(SliceCursor* c, uint64_t end, DecodedMessage* m) {
  while (c->position() < end) {
    uint64_t tag = 0, v = 0;
    if (!c->ReadVarint(&tag)) return Malformed("a truncated field tag");
    const uint64_t field = tag >> 3, type = tag & 7;
    bool ok;
    if (field == kSegmentField && type == kVarint) {
      ok = c->ReadVarint(&v);
      m->segment = static_cast<uint32_t>(v);
    } else if (field == kOffsetField && type == kVarint) {
      ok = c->ReadVarint(&m->offset);
    } else if (field == kBytesField && type == kLengthDelimited) {
      m->bytes.clear();
      ok = c->ReadVarint(&v) && c->Take(v, &m->bytes);
    } else if (field == kChecksumField && type == kVarint) {
      ok = c->ReadVarint(&v);
      m->checksum = v;
    } else {
      ok = c->Skip(type);
    }
    if (!ok) return Malformed(absl::StrCat("segment data field ", field, " is cut short"));
  }
  if (c->position() != end) return Malformed("a segment data field overruns its message");
  return absl::OkStatus();
}

}  // namespace

size_t EncodedPieceSize(const Piece& piece) {
  const Framing f = SegmentDataFraming(piece);
  const uint64_t data = f.head + piece.size + f.tail;
  return VarintSize(Tag(kDataField, kLengthDelimited)) + VarintSize(data) + data;
}

void EncodePiece(const Piece& piece, uint8_t* out) {
  const Framing f = SegmentDataFraming(piece);
  out = PutVarint(out, Tag(kDataField, kLengthDelimited));
  out = PutVarint(out, f.head + piece.size + f.tail);
  out = PutVarint(out, Tag(kSegmentField, kVarint));
  out = PutVarint(out, piece.segment);
  out = PutVarint(out, Tag(kOffsetField, kVarint));
  out = PutVarint(out, piece.offset);
  out = PutVarint(out, Tag(kBytesField, kLengthDelimited));
  out = PutVarint(out, piece.size);
  for (const std::span<const uint8_t>& chunk : piece.chunks) {
    std::memcpy(out, chunk.data(), chunk.size());
    out += chunk.size();
  }
  if (piece.checksum.has_value()) {
    out = PutVarint(out, Tag(kChecksumField, kVarint));
    PutVarint(out, *piece.checksum);
  }
}

absl::StatusOr<DecodedMessage> DecodeStateMessage(const std::vector<grpc::Slice>& slices) {
  SliceCursor c(slices);
  DecodedMessage m;
  enum class Body { kNone, kManifest, kData } body = Body::kNone;
  std::vector<std::span<const uint8_t>> manifest;
  while (!c.done()) {
    uint64_t tag = 0, length = 0;
    if (!c.ReadVarint(&tag)) return Malformed("a truncated field tag");
    const uint64_t field = tag >> 3, type = tag & 7;
    if (field == kManifestField && type == kLengthDelimited) {
      manifest.clear();
      if (!c.ReadVarint(&length) || !c.Take(length, &manifest)) {
        return Malformed("the manifest is cut short");
      }
      body = Body::kManifest;
    } else if (field == kDataField && type == kLengthDelimited) {
      if (!c.ReadVarint(&length)) return Malformed("the segment data is cut short");
      if (body != Body::kData) m = DecodedMessage();
      const absl::Status status = DecodeSegmentData(&c, c.position() + length, &m);
      if (!status.ok()) return status;
      body = Body::kData;
    } else if (!c.Skip(type)) {
      return Malformed(absl::StrCat("field ", field, " is cut short"));
    }
  }
  if (body == Body::kNone) return Malformed("it holds neither a manifest nor segment data");
  if (body == Body::kData) return m;
  std::string bytes;
  for (const auto& piece : manifest) {
    bytes.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  }
  DecodedMessage result;
  result.manifest.emplace();
  if (!result.manifest->ParseFromString(bytes)) return Malformed("the manifest does not parse");
  return result;
}

}  // namespace ringserve::state
