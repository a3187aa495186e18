#include "common/text/byte_level.h"

#include "common/text/utf8.h"

namespace ringserve::text {

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet* const alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  auto shown_as_itself = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (shown_as_itself(b)) order_[n++] = static_cast<uint8_t>(b);
  }
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    if (shown_as_itself(b)) {
      byte_to_char_[b] = static_cast<char32_t>(b);
    } else {
      byte_to_char_[b] = static_cast<char32_t>(256 + extra++);
      order_[n++] = static_cast<uint8_t>(b);
    }
  }
}

std::optional<uint8_t> ByteLevelAlphabet::ByteOf(char32_t c) const {
  if (c < 256) {
    if (byte_to_char_[c] == c) return static_cast<uint8_t>(c);
    return std::nullopt;
  }
  if (c >= 256 + 68) return std::nullopt;
  // Code points from U+0100 show the non-printable bytes in increasing order.
  return order_[188 + (c - 256)];
}

std::string ByteLevelAlphabet::Encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char b : bytes) AppendCodePoint(byte_to_char_[static_cast<uint8_t>(b)], &out);
  return out;
}

std::optional<std::string> ByteLevelAlphabet::Decode(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const std::optional<uint8_t> b = ByteOf(NextCodePoint(text, &pos));
    if (!b.has_value()) return std::nullopt;
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

}  // namespace ringserve::text
