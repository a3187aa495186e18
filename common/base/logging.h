#pragma once

#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ringserve::base {

// Severity of a log line; lines below the process-wide level are dropped.
enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the process-wide level. Thread-safe.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning" or "error".
absl::Status SetLogLevel(std::string_view name);
bool LogEnabled(LogLevel level);
// Sets the component name printed in every line (e.g. "router"). Call once at startup.
void SetLogComponent(std::string_view component);

// One log line in key=value form, written to stderr in a single write when destroyed:
//   ts=2026-11-29T14:00:00.123Z level=info comp=router <what the caller streamed>
// Callers stream key=value pairs, quoting values a client controls:
//   RS_LOG(kInfo) << "event=admitted request_id=" << Quote(id);
// A line is always exactly one event: any control byte that reaches it (a newline included) is
// written as \xNN. Thread-safe (each line is one write(2)).
class LogLine {
 public:
  explicit LogLine(LogLevel level);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// A value for key=value output: as is when it is non-empty printable ASCII without spaces,
// quotes, backslashes or '='; otherwise in double quotes, with '"' and '\' escaped by a
// backslash and every byte outside printable ASCII (control bytes, DEL, bytes of 0x80 and up)
// as \xNN. The result is printable ASCII and parses back to `value`.
std::string Quote(std::string_view value);

}  // namespace ringserve::base

#define RS_LOG(level)                                                     \
  if (!::ringserve::base::LogEnabled(::ringserve::base::LogLevel::level)) \
    ;                                                                     \
  else                                                                    \
    ::ringserve::base::LogLine(::ringserve::base::LogLevel::level).stream()
