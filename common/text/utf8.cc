#include "common/text/utf8.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ringserve::text {
namespace {

// For a lead byte, the length of its sequence and the allowed range of the second byte
// (Unicode Table 3-7, "Well-Formed UTF-8 Byte Sequences"). Length 0 marks an invalid lead byte.
struct LeadInfo {
  int length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Length of the well-formed prefix of the sequence at `pos`: the full length when the sequence
// is complete and valid, else how many bytes form a valid but unfinished (or broken) prefix.
// `*complete` says whether the sequence is whole; `*truncated` whether it ran into the end.
int ScanSequence(std::string_view bytes, size_t pos, bool* complete, bool* truncated) {
  const auto b0 = static_cast<uint8_t>(bytes[pos]);
  const LeadInfo info = Lead(b0);
  *complete = false;
  *truncated = false;
  if (info.length == 0) return 0;
  if (info.length == 1) {
    *complete = true;
    return 1;
  }
  for (int i = 1; i < info.length; ++i) {
    if (pos + i >= bytes.size()) {
      *truncated = true;
      return i;
    }
    const auto b = static_cast<uint8_t>(bytes[pos + i]);
    const uint8_t lo = i == 1 ? info.second_lo : 0x80;
    const uint8_t hi = i == 1 ? info.second_hi : 0xBF;
    if (b < lo || b > hi) return i;
  }
  *complete = true;
  return info.length;
}

}  // namespace

absl::Status ValidateUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    bool complete;
    bool truncated;
    const int n = ScanSequence(text, pos, &complete, &truncated);
    if (!complete) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid UTF-8 at byte offset ", pos, " (byte 0x",
                       absl::Hex(static_cast<uint8_t>(text[pos]), absl::kZeroPad2), ")"));
    }
    pos += n;
  }
  return absl::OkStatus();
}

size_t AppendUtf8Lossy(std::string_view bytes, bool final, std::string* out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool complete;
    bool truncated;
    const int n = ScanSequence(bytes, pos, &complete, &truncated);
    if (complete) {
      out->append(bytes.substr(pos, n));
      pos += n;
    } else if (truncated && !final) {
      break;
    } else {
      out->append(kReplacementChar);
      pos += n == 0 ? 1 : n;
    }
  }
  return pos;
}

void AppendCodePoint(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

char32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto b0 = static_cast<uint8_t>(text[*pos]);
  if (b0 < 0x80) {
    ++*pos;
    return b0;
  }
  const int length = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t c = b0 & (0x7F >> length);
  for (int i = 1; i < length && *pos + i < text.size(); ++i) {
    c = (c << 6) | (static_cast<uint8_t>(text[*pos + i]) & 0x3F);
  }
  *pos = std::min(*pos + length, text.size());
  return c;
}

size_t CodePointCount(std::string_view text) {
  size_t count = 0;
  for (char c : text) {
    if ((static_cast<uint8_t>(c) & 0xC0) != 0x80) ++count;
  }
  return count;
}

}  // namespace ringserve::text
