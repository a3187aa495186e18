#include "common/base/logging.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ringserve::base {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_component_mu;
std::string* g_component = new std::string("ringserve");

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

bool Printable(unsigned char c) { return c >= 0x20 && c < 0x7f; }

void AppendHex(unsigned char c, std::string* out) {
  absl::StrAppend(out, "\\x", absl::Hex(c, absl::kZeroPad2));
}

// `line` with every control byte (below 0x20, and DEL) written as \xNN.
std::string EscapeControlBytes(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (char c : line) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      AppendHex(u, &out);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

absl::Status SetLogLevel(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (LogLevel level : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (lower == LevelName(level)) {
      SetLogLevel(level);
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("log level '", std::string(name),
                                                 "' is not one of debug, info, warning, error"));
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void SetLogComponent(std::string_view component) {
  std::lock_guard<std::mutex> lock(g_component_mu);
  *g_component = std::string(component);
}

LogLine::LogLine(LogLevel level) {
  std::string component;
  {
    std::lock_guard<std::mutex> lock(g_component_mu);
    component = *g_component;
  }
  stream_ << "ts=" << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())
          << " level=" << LevelName(level) << " comp=" << component << " ";
}

LogLine::~LogLine() {
  const std::string line = EscapeControlBytes(stream_.str()) + '\n';
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

std::string Quote(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) {
    plain = plain && Printable(c) && c != ' ' && c != '"' && c != '\\' && c != '=';
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (Printable(c)) {
      out.push_back(c);
    } else {
      AppendHex(static_cast<unsigned char>(c), &out);
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace ringserve::base
